"""Where an encoder runs, resolved once from SEMINDEX_DEVICE (auto, cpu or cuda) against what the
runtime can use here, with the batch size that device wants.

Two runtimes answer "is there a GPU" differently: torch (sentence-transformers) through
torch.cuda.is_available(), onnxruntime through its providers (CUDAExecutionProvider exists only in
the onnxruntime-gpu build). `auto` takes the GPU when the runtime has one and the CPU otherwise;
`cuda` asked where the runtime has none is an error naming what is missing, never a silent CPU run.
"""

from __future__ import annotations

from dataclasses import dataclass

from semindex import settings
from semindex.encoders.base import EncoderUnavailable

# Texts per forward pass. 64 keeps a CPU batch's padding and memory small (texts are sorted by
# length, so a batch pads little anyway); a GPU is only kept busy by larger batches.
CPU_BATCH_SIZE = 64
CUDA_BATCH_SIZE = 256
BATCH_SIZES = {"cpu": CPU_BATCH_SIZE, "cuda": CUDA_BATCH_SIZE}

CUDA_PROVIDER = "CUDAExecutionProvider"
CPU_PROVIDER = "CPUExecutionProvider"


@dataclass(frozen=True)
class Device:
    """A resolved device: "cpu" or "cuda", what was asked for, and the batch size it wants."""

    name: str
    asked: str

    @property
    def batch_size(self) -> int:
        return BATCH_SIZES[self.name]

    def onnx_providers(self) -> list[str]:
        """onnxruntime providers in order of preference; on CUDA, nodes the CUDA provider has no
        kernel for fall back to the CPU provider."""
        return [CUDA_PROVIDER, CPU_PROVIDER] if self.name == "cuda" else [CPU_PROVIDER]


def _resolve(asked: str, gpu_present: bool, missing: str, *, gpu_worthwhile: bool = True) -> Device:
    if asked == "cuda":
        if not gpu_present:
            raise EncoderUnavailable(f"SEMINDEX_DEVICE=cuda, but {missing}; use SEMINDEX_DEVICE=auto or cpu")
        return Device("cuda", asked)
    if asked == "auto" and gpu_present and gpu_worthwhile:
        return Device("cuda", asked)
    return Device("cpu", asked)


def torch_device() -> Device:
    """The device for torch models (sentence-transformers)."""
    asked = settings.device()
    if asked == "cpu":
        return Device("cpu", asked)  # no need to initialise CUDA at all
    import torch

    missing = (
        f"torch {torch.__version__} is a CPU-only build (install the CUDA build of torch)"
        if torch.version.cuda is None
        else "torch sees no CUDA device"
    )
    return _resolve(asked, torch.cuda.is_available(), missing)


def onnx_device(*, gpu_worthwhile: bool = True) -> Device:
    """The device for onnxruntime sessions. gpu_worthwhile=False keeps `auto` on the CPU for models
    built for it (dynamic int8 quantisation is a CPU recipe); `cuda` still honours the request."""
    asked = settings.device()
    if asked == "cpu":
        return Device("cpu", asked)
    import onnxruntime

    available = onnxruntime.get_available_providers()
    missing = (
        f"onnxruntime {onnxruntime.__version__} has no {CUDA_PROVIDER} (providers: {', '.join(available)}; "
        "install onnxruntime-gpu in place of onnxruntime)"
    )
    return _resolve(asked, CUDA_PROVIDER in available, missing, gpu_worthwhile=gpu_worthwhile)
