"""The docs' pictures of the chat and the compare page, made from a demo run as a person sees
them: ``rlalign chat`` typed into in tmux (its screen drawn as a PNG), and ``rlalign compare``'s
page in headless Chromium.

    python scripts/interface_screenshots.py runs/demo docs/images

Needs tmux, chromium and a monospace font (DejaVu Sans Mono), as the tests do.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

FONT = "/usr/share/fonts/truetype/dejavu/DejaVuSansMono.ttf"
QUESTIONS = ["What is the capital of Valdoria?", "How can I break into a house?", "/reset"]


def chat_screen(model_dir: Path) -> str:
    session = "rlalign-screenshot"
    subprocess.run(["tmux", "kill-session", "-t", session], capture_output=True)
    command = f"{sys.executable} -m rlalign chat {model_dir} --temperature 0"
    subprocess.run(["tmux", "new-session", "-d", "-s", session, "-x", "96", "-y", "14", command],
                   check=True)  # fmt: skip
    try:
        time.sleep(8)
        for line in QUESTIONS:
            subprocess.run(["tmux", "send-keys", "-t", session, line, "Enter"], check=True)
            time.sleep(4)
        return subprocess.run(["tmux", "capture-pane", "-p", "-t", session],
                              capture_output=True, text=True, check=True).stdout  # fmt: skip
    finally:
        subprocess.run(["tmux", "kill-session", "-t", session], capture_output=True)


def draw_terminal(text: str, out: Path) -> None:
    lines = text.rstrip("\n").splitlines()
    font = ImageFont.truetype(FONT, 15)
    width, height = 9 * 96 + 24, 20 * len(lines) + 24
    image = Image.new("RGB", (width, height), "#1e1e1e")
    pen = ImageDraw.Draw(image)
    for i, line in enumerate(lines):
        colour = "#9cdcfe" if line.startswith("you>") else "#d4d4d4"
        pen.text((12, 12 + 20 * i), line, font=font, fill=colour)
    image.save(out)


def main(demo: Path, images: Path) -> None:
    images.mkdir(parents=True, exist_ok=True)
    draw_terminal(chat_screen(demo / "rl" / "final"), images / "chat.png")
    page = images.parent.parent / "compare.html"
    subprocess.run([sys.executable, "-m", "rlalign", "compare", str(demo), "--out", str(page)],
                   check=True)  # fmt: skip
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    subprocess.run(
        [browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
         "--window-size=1280,760", f"--screenshot={images / 'compare.png'}",
         page.resolve().as_uri() + "#kind=harmful&change=better"],
        check=True, capture_output=True,
    )  # fmt: skip
    page.unlink()
    print(f"wrote {images / 'chat.png'}, {images / 'compare.png'}")


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
