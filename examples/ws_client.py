"""Stream a folder of images to the gateway's WebSocket at a set frame rate; print each label and its latency.

    python examples/ws_client.py --url ws://127.0.0.1:8080/api/v1/ws --token "$TOKEN" --folder ./frames --fps 10
    python examples/ws_client.py --token "$TOKEN" --digits 20     # no folder: 64x64 PNG digits made from sklearn's set

Frames go as binary messages (no base64) after a ``config`` command names the model; the gateway answers each with a
``prediction`` (or reports ``dropped`` frames when the client sends faster than it is answered). Exits 1 on any error.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path

from websockets.asyncio.client import connect

SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp"}


def load_frames(folder: Path | None, digits: int) -> list[tuple[str, bytes]]:
    if folder is not None:
        return [(p.name, p.read_bytes()) for p in sorted(folder.iterdir()) if p.suffix.lower() in SUFFIXES]
    from loadtests.ws_frames import digit_pngs  # run from the repository root

    return [(f"digit-{label}", png) for label, png in digit_pngs(count=digits)]


async def stream(url: str, token: str, model: str, frames: list[tuple[str, bytes]], fps: float) -> int:
    # Browsers cannot set headers: they send ["bearer", token] as subprotocols instead (see the README).
    async with connect(url, additional_headers={"Authorization": f"Bearer {token}"}) as ws:
        ready = json.loads(await ws.recv())
        if ready.get("type") != "ready":
            print(f"refused: {ready}", file=sys.stderr)
            return 1
        await ws.send(json.dumps({"command": "config", "model": model, "top_k": 3}))
        print(json.loads(await ws.recv()))
        sent: dict[int, tuple[str, float]] = {}
        errors = 0
        for i, (name, data) in enumerate(frames):
            sent[i] = (name, time.perf_counter())
            await ws.send(data)
            deadline = time.perf_counter() + 1.0 / fps
            # Read what has arrived until the next frame is due: a live client never waits for one answer per frame.
            while (left := deadline - time.perf_counter()) > 0:
                try:
                    msg = json.loads(await asyncio.wait_for(ws.recv(), left))
                except TimeoutError:
                    break
                errors += report(msg)
        await ws.send(json.dumps({"command": "ping"}))
        while (msg := json.loads(await ws.recv()))["type"] != "pong":  # everything before the pong is answered
            errors += report(msg)
    return 1 if errors else 0


def report(msg: dict) -> int:
    kind = msg["type"]
    if kind == "prediction":
        print(f"{msg['label']:>10}  p={msg['confidence']:.3f}  {msg['latency_ms']:6.1f} ms  {msg['prediction_id']}")
    elif kind == "dropped":
        print(f"dropped {msg['count']} frame(s): the gateway answers the latest")
    elif kind == "error":
        print(f"error: {msg['error']['code']}: {msg['error']['message']}", file=sys.stderr)
        return 1
    return 0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--url", default="ws://127.0.0.1:8080/api/v1/ws")
    ap.add_argument("--token", required=True, help="an access token (POST /api/v1/auth/login) or an API key")
    ap.add_argument("--model", default="digits-cnn")
    ap.add_argument("--folder", type=Path, help="images to stream (sorted by name); default: generated digits")
    ap.add_argument("--digits", type=int, default=10, help="generated digits to stream when no --folder is given")
    ap.add_argument("--fps", type=float, default=10.0)
    args = ap.parse_args()
    frames = load_frames(args.folder, args.digits)
    if not frames:
        sys.exit("no images to stream")
    sys.exit(asyncio.run(stream(args.url, args.token, args.model, frames, args.fps)))


if __name__ == "__main__":
    main()
