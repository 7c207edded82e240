#!/usr/bin/env python3
"""Render `graphconv viz` HTML for a spec and check it in a real browser, when a headless Chromium is installed.

    python tools/screenshot_viz.py specs/resnet50.gc                      # -> /tmp/graphconv-viz/resnet50*.png
    python tools/screenshot_viz.py specs/googlenet.gc --set aux_logits=true --click inception3a
    python tools/screenshot_viz.py specs/resnet18.gc -O2 --hash 'depth=2'

Steps, each printed with its outcome:
1. writes OUT/NAME.html (and OUT/NAME.svg, the static drawing);
2. `chromium --headless --screenshot`: OUT/NAME.png of the first view (and OUT/NAME-svg.png of the SVG);
3. `chromium --headless --dump-dom`: the page after its script ran must hold the viewer's drawing
   (svg[data-rendered=js]) with one element per box;
4. with --click GROUP: drives the page over the DevTools protocol (--remote-debugging-pipe, no extra packages):
   a real mouse click on the collapsed group must open it (its title bar appears, the URL hash records it),
   hovering a box inside must show its details in the side panel, a click on the title bar must close it again.
   Screenshots OUT/NAME-open.png and OUT/NAME-closed.png.
Without Chromium only step 1 runs. Exit status 1 when a check fails.
"""

from __future__ import annotations

import argparse
import base64
import fcntl
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from graphconv.cli import _set_arg  # noqa: E402
from graphconv.viz import build_model, render_html, render_svg  # noqa: E402

CHROME_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--no-first-run",
                "--disable-extensions", "--window-size=1400,1000"]


def find_chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        path = shutil.which(name)
        if path:
            return path
    return None


def _run(cmd: list[str], timeout: float = 90) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)


class DevTools:
    """A minimal Chrome DevTools protocol client over --remote-debugging-pipe (fd 3: commands, fd 4: replies,
    messages separated by NUL bytes)."""

    def __init__(self, chromium: str, width: int = 1400, height: int = 1000):
        to_chrome_r, self._to_chrome = os.pipe()
        self._from_chrome, from_chrome_w = os.pipe()

        def as_fds_3_and_4() -> None:  # in the child, before exec: chromium expects the pipe on fds 3 and 4
            high_r = fcntl.fcntl(to_chrome_r, fcntl.F_DUPFD, 10)
            high_w = fcntl.fcntl(from_chrome_w, fcntl.F_DUPFD, 10)
            os.dup2(high_r, 3)
            os.dup2(high_w, 4)

        self.proc = subprocess.Popen([chromium, *CHROME_FLAGS, "--remote-debugging-pipe", "about:blank"],
                                     preexec_fn=as_fds_3_and_4, close_fds=False,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        os.close(to_chrome_r)
        os.close(from_chrome_w)
        self._buf = b""
        self._next = 0
        self.events: list[dict] = []
        page = next(t for t in self.call("Target.getTargets")["targetInfos"] if t["type"] == "page")
        self.session = self.call("Target.attachToTarget", targetId=page["targetId"], flatten=True)["sessionId"]
        self.call("Page.enable", session=True)
        self.call("Emulation.setDeviceMetricsOverride", session=True, width=width, height=height,
                  deviceScaleFactor=1, mobile=False)

    def _read(self, timeout: float) -> dict:
        deadline = time.monotonic() + timeout
        while b"\0" not in self._buf:
            if time.monotonic() > deadline:
                raise TimeoutError("no reply from chromium")
            chunk = os.read(self._from_chrome, 1 << 16)
            if not chunk:
                raise RuntimeError("chromium closed the pipe")
            self._buf += chunk
        msg, self._buf = self._buf.split(b"\0", 1)
        return json.loads(msg)

    def call(self, method: str, session: bool = False, timeout: float = 30, **params) -> dict:
        self._next += 1
        msg = {"id": self._next, "method": method, "params": params}
        if session:
            msg["sessionId"] = self.session
        os.write(self._to_chrome, json.dumps(msg).encode() + b"\0")
        while True:
            reply = self._read(timeout)
            if reply.get("id") == self._next:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            self.events.append(reply)

    def wait_event(self, method: str, timeout: float = 30) -> dict:
        for i, e in enumerate(self.events):
            if e.get("method") == method:
                return self.events.pop(i)
        while True:
            e = self._read(timeout)
            if e.get("method") == method:
                return e
            self.events.append(e)

    def eval(self, expression: str):
        r = self.call("Runtime.evaluate", session=True, expression=expression, returnByValue=True)
        if "exceptionDetails" in r:
            raise RuntimeError(f"{expression}: {r['exceptionDetails']}")
        return r["result"].get("value")

    def goto(self, url: str) -> None:
        self.call("Page.navigate", session=True, url=url)
        self.wait_event("Page.loadEventFired")

    def click(self, x: float, y: float) -> None:
        for kind in ("mouseMoved", "mousePressed", "mouseReleased"):
            self.call("Input.dispatchMouseEvent", session=True, type=kind, x=x, y=y, button="left", clickCount=1)

    def hover(self, x: float, y: float) -> None:
        self.call("Input.dispatchMouseEvent", session=True, type="mouseMoved", x=x, y=y)

    def screenshot(self, path: Path) -> None:
        data = self.call("Page.captureScreenshot", session=True, format="png")["data"]
        path.write_bytes(base64.b64decode(data))

    def close(self) -> None:
        try:
            self.call("Browser.close", timeout=5)
        except Exception:  # noqa: BLE001 - closing anyway
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        os.close(self._to_chrome)
        os.close(self._from_chrome)


def center_of(dt: DevTools, selector: str):
    """The viewport centre of the first element matching `selector`, scrolled into view; None if absent."""
    return dt.eval(f"""(() => {{
        const e = document.querySelector({json.dumps(selector)});
        if (!e) return null;
        e.scrollIntoView({{block: "center", inline: "center"}});
        const r = e.getBoundingClientRect();
        return [r.left + Math.min(r.width / 2, 60), r.top + Math.min(r.height / 2, 10)];
    }})()""")


def click_check(chromium: str, url: str, model, group_name: str, out: Path, name: str) -> list[str]:
    """Open and close `group_name` with real clicks; returns the failed checks."""
    failures = []
    group = next((g for g in model.groups if g.name == group_name), None)
    if group is None:
        return [f"--click: no group named {group_name!r}"]
    dt = DevTools(chromium)
    try:
        # make sure the group starts closed (and its parents open)
        dt.goto(f"{url}#depth={group.depth - 1}")
        at = center_of(dt, f'.gc-collapsed[data-group="{group.id}"]')
        if at is None:
            return [f"{group_name} is not drawn closed at depth {group.depth - 1}"]
        dt.click(*at)
        time.sleep(0.2)
        opened = dt.eval(f'!!document.querySelector(\'.gc-header[data-group="{group.id}"]\')')
        hash_ = dt.eval("location.hash")
        print(f"  click on closed {group_name}: opened={opened}, hash={hash_!r}")
        if not opened:
            failures.append(f"clicking {group_name} did not open it")
        if "expand=" not in (hash_ or ""):
            failures.append("the URL hash does not record the opened group")
        first = next((c for c in group.children if c in model.by_id and not hasattr(model.by_id[c], "children")),
                     None)
        if first is not None:
            at = center_of(dt, f'[data-node="{first}"]')
            if at is not None:
                dt.hover(*at)
                time.sleep(0.1)
                panel = dt.eval("document.getElementById('gc-panel').textContent")
                ok = model.by_id[first].name in panel and "Source" in panel
                print(f"  hover on {model.by_id[first].name}: details shown={ok}")
                if not ok:
                    failures.append("hovering a box did not show its details")
        dt.screenshot(out / f"{name}-open.png")
        at = center_of(dt, f'.gc-header[data-group="{group.id}"]')
        if at is not None:
            dt.click(*at)
            time.sleep(0.2)
        closed = dt.eval(f'!!document.querySelector(\'.gc-collapsed[data-group="{group.id}"]\')')
        print(f"  click on the title bar of {group_name}: closed={closed}")
        if not closed:
            failures.append(f"clicking the title bar of {group_name} did not close it")
        dt.screenshot(out / f"{name}-closed.png")
        errors = [e for e in dt.events if e.get("method") == "Runtime.exceptionThrown"]
        if errors:
            failures.append(f"script errors: {errors[:2]}")
    finally:
        dt.close()
    return failures


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("spec")
    ap.add_argument("-o", "--out", default="/tmp/graphconv-viz", help="output folder (default /tmp/graphconv-viz)")
    ap.add_argument("--set", dest="sets", type=_set_arg, action="append", default=[])
    ap.add_argument("-O", dest="opt_level", type=int, default=0, choices=(0, 1, 2, 3))
    ap.add_argument("--depth", type=int, default=1)
    ap.add_argument("--hash", default="", help="URL hash for the screenshot, e.g. 'expand=layer1.bottleneck0'")
    ap.add_argument("--click", action="append", default=[], metavar="GROUP",
                    help="open and close this group with real mouse clicks (repeatable)")
    args = ap.parse_args(argv)

    from graphconv.cli import _load

    args.weights = None
    graph, weights = _load(args, args.spec, weights=False)
    if args.opt_level:
        from graphconv.network import Network
        from graphconv.passes.manager import optimize

        graph = optimize(Network(graph, weights), args.opt_level)[0].graph
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    name = Path(args.spec).stem + (f"-O{args.opt_level}" if args.opt_level else "")
    model = build_model(graph, source=args.spec, opt_level=args.opt_level)
    t0 = time.perf_counter()
    html_path = out / f"{name}.html"
    html_path.write_text(render_html(model, depth=args.depth), encoding="utf-8")
    svg_path = out / f"{name}.svg"
    svg_path.write_text(render_svg(model), encoding="utf-8")
    print(f"wrote {html_path} and {svg_path} in {time.perf_counter() - t0:.2f} s")

    chromium = find_chromium()
    if chromium is None:
        print("no chromium on PATH: no screenshots (apt-get install chromium)")
        return 0
    url = html_path.resolve().as_uri()
    failures = []
    shot = out / f"{name}.png"
    target = url + (f"#{args.hash}" if args.hash else "")
    r = _run([chromium, *CHROME_FLAGS, f"--screenshot={shot}", target])
    print(f"screenshot {shot}: {'ok' if shot.exists() else 'failed ' + r.stderr[-300:]}")
    svg_shot = out / f"{name}-svg.png"
    _run([chromium, *CHROME_FLAGS, f"--screenshot={svg_shot}", svg_path.resolve().as_uri()])
    print(f"screenshot {svg_shot}: {'ok' if svg_shot.exists() else 'failed'}")
    dom = _run([chromium, *CHROME_FLAGS, "--dump-dom", target]).stdout
    rendered = 'data-rendered="js"' in dom
    boxes = dom.count('class="gc-node')
    print(f"dump-dom: viewer drew the graph={rendered}, {boxes} boxes")
    if not rendered or boxes == 0:
        failures.append("the page's script did not draw the graph")
    for group in args.click:
        failures += click_check(chromium, url, model, group, out, f"{name}-{group}")
    for f in failures:
        print(f"FAILED: {f}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
