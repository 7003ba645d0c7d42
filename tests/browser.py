"""Headless Chromium for UI tests: Debian's chromium and chromium-driver, driven by Selenium.

The driver path is always given to Selenium explicitly, so Selenium Manager never tries to download
a driver (this machine has no route to the internet).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
DEBIAN_PACKAGES = ("chromium", "chromium-driver")

# Without the background-networking flags Chromium keeps opening connections (component updates,
# sync, field trials) that this machine's closed network refuses, which slows or breaks startup.
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
)


class ChromiumUnavailable(RuntimeError):
    """Chromium or chromedriver is missing and could not be installed."""


def _apt_get(*arguments: str) -> subprocess.CompletedProcess:
    # Wait for another apt/dpkg (e.g. a parallel worker) instead of failing on its lock.
    return subprocess.run(
        ["apt-get", "-o", "DPkg::Lock::Timeout=300", *arguments],
        env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"},
        capture_output=True, text=True, timeout=1200,
    )


def ensure_chromium() -> None:
    """Install Debian's chromium and chromium-driver when either binary is absent.

    Tries `apt-get install` first and runs `apt-get update` only when that fails (stale lists);
    reinstalls when the packages are installed but a binary is gone. Raises ChromiumUnavailable
    with apt's output when they still cannot be installed.
    """
    missing = [str(path) for path in (CHROMIUM, CHROMEDRIVER) if not path.exists()]
    if not missing:
        return
    wanted = f"apt-get install -y {' '.join(DEBIAN_PACKAGES)}"
    if os.geteuid() != 0:
        raise ChromiumUnavailable(f"{', '.join(missing)} missing and this is not root: run `{wanted}` as root")
    install = _apt_get("install", "-y", *DEBIAN_PACKAGES)
    if install.returncode != 0:
        update = _apt_get("update")
        if update.returncode != 0:
            raise ChromiumUnavailable(f"`apt-get update` failed ({update.returncode}):\n{update.stderr[-3000:]}")
        install = _apt_get("install", "-y", *DEBIAN_PACKAGES)
    if install.returncode == 0 and not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
        # Installed packages with a binary deleted: a plain install sees nothing to do.
        install = _apt_get("install", "-y", "--reinstall", *DEBIAN_PACKAGES)
    still_missing = [str(path) for path in (CHROMIUM, CHROMEDRIVER) if not path.exists()]
    if install.returncode != 0 or still_missing:
        raise ChromiumUnavailable(
            f"`{wanted}` failed ({install.returncode}); missing: {', '.join(still_missing) or 'none'}\n"
            f"{install.stdout[-2000:]}\n{install.stderr[-3000:]}"
        )


def headless_chromium(user_data_dir: Path, *, width: int = 1600, height: int = 1000):
    """A Selenium Chrome driver on /usr/bin/chromium through /usr/bin/chromedriver, with a fresh
    profile in `user_data_dir` (an empty directory). The caller quits it."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--window-size={width},{height}")
    options.add_argument(f"--user-data-dir={user_data_dir}")
    return webdriver.Chrome(service=Service(executable_path=str(CHROMEDRIVER)), options=options)


def xpath_literal(text: str) -> str:
    """`text` as an XPath 1.0 string literal (XPath has no escapes; mixed quotes need concat)."""
    if "'" not in text:
        return f"'{text}'"
    if '"' not in text:
        return f'"{text}"'
    return "concat(" + ", \"'\", ".join(f"'{part}'" for part in text.split("'")) + ")"


def with_text(text: str, within: str = "//*") -> str:
    """XPath of the elements under `within` whose own text, whitespace-normalised, is `text`."""
    return f"{within}[normalize-space(text())={xpath_literal(text)}]"


def first_visible(xpath: str):
    """A WebDriverWait condition: the first displayed element matching `xpath`, else False.

    (Selenium's visibility_of_element_located looks at the first match only; the Dagster UI often
    renders a hidden copy of a label next to the visible one, for measuring.)
    """
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.common.by import By

    def condition(driver):
        for element in driver.find_elements(By.XPATH, xpath):
            try:
                if element.is_displayed():
                    return element
            except StaleElementReferenceException:
                continue
        return False

    return condition


def wait_until(driver, condition, what: str, timeout: float = 30):
    """The first truthy value of `condition(driver)`, waiting up to `timeout` seconds; the timeout
    message says `what` was expected and on which page."""
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.support.ui import WebDriverWait

    try:
        return WebDriverWait(driver, timeout, poll_frequency=0.2).until(condition)
    except TimeoutException:
        raise AssertionError(f"{what} did not show within {timeout:.0f} s on {driver.current_url}") from None


def wait_visible(driver, xpath: str, what: str, timeout: float = 30):
    """The first visible element matching `xpath`, waiting up to `timeout` seconds."""
    return wait_until(driver, first_visible(xpath), what, timeout)


@contextlib.contextmanager
def screenshot_on_failure(driver, directory: Path, name: str = "failure") -> Iterator[None]:
    """On an exception, save a PNG and the page text to `directory` and add their paths, the URL
    and the start of the visible text to the error."""
    try:
        yield
    except Exception as error:
        png, text = directory / f"{name}.png", directory / f"{name}.txt"
        try:
            driver.save_screenshot(str(png))
            body = driver.execute_script("return document.body ? document.body.innerText : ''") or ""
            text.write_text(f"{driver.current_url}\n\n{body}", encoding="utf-8")
            seen = f"url {driver.current_url}; screenshot {png}; page text {text}:\n{body[:1500]}"
        except Exception as capture_error:  # the browser itself may be what broke
            seen = f"no screenshot ({capture_error!r})"
        raise AssertionError(f"{error}\n--- browser: {seen}") from error


def _live_members(group: int) -> list[int]:
    """Pids in process group `group` that are not zombies (a zombie is already dead; only its
    parent can reap it)."""
    members = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rpartition(")")[2].split()  # after "pid (comm)"
        except OSError:
            continue  # exited while we looked
        state, pgrp = fields[0], int(fields[2])
        if pgrp == group and state != "Z":
            members.append(int(stat.parent.name))
    return members


def stop_process_group(process: subprocess.Popen, grace_seconds: float = 30) -> None:
    """SIGTERM the process group led by `process` (started with start_new_session=True), wait for
    every member to leave, then SIGKILL whatever is left."""
    group = process.pid
    with contextlib.suppress(ProcessLookupError):
        os.killpg(group, signal.SIGTERM)
    deadline = time.monotonic() + grace_seconds
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=grace_seconds)
    # The leader can exit before its children (dagster dev, webserver, daemon, code server) do.
    while time.monotonic() < deadline:
        if not _live_members(group):
            return
        time.sleep(0.2)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(group, signal.SIGKILL)
    process.wait(timeout=10)
