"""An aiortc peer for tests/interop_aiortc.rs: a standard WebRTC endpoint
that sends a sine tone (and, with --video, colour bars) and reports what it
hears (and sees).

Signals are exchanged as JSON lines in callinvite's media-signal shape
({"kind": "offer", "sdp": ...}, {"kind": "candidate", "candidate": ...}, ...)
on stdin/stdout. At the end it prints {"kind": "report", ...} with the RMS
and the power at a few frequencies of the last second it received.

With --video it also sends 75 % colour bars (white, yellow, cyan, green,
magenta, red, blue, black; the same as callinvite's TestPattern) at 640x480,
30 fps, and the report adds the number of pictures it decoded, their size
and the mean colour of each bar of the last one.

usage: aiortc_peer.py --role offer|answer --freq 660 --seconds 4 [--video]
"""

import argparse
import asyncio
import fractions
import json
import math
import sys
from array import array

import aioice.ice
import av
from aiortc import MediaStreamTrack, RTCPeerConnection, RTCSessionDescription
from aiortc.sdp import candidate_from_sdp

# Tests send only to this machine's loopback: gather 127.0.0.1 as the only
# host candidate (aioice would otherwise offer every interface but loopback).
aioice.ice.get_host_addresses = lambda use_ipv4=True, use_ipv6=False: ["127.0.0.1"]

RATE = 48000
FRAME = 960


class Tone(MediaStreamTrack):
    """A sine tone in 20 ms frames, paced in real time."""

    kind = "audio"

    def __init__(self, freq):
        super().__init__()
        self.freq = freq
        self.n = 0
        self.start = None

    async def recv(self):
        loop = asyncio.get_running_loop()
        if self.start is None:
            self.start = loop.time()
        wait = self.start + self.n / RATE - loop.time()
        if wait > 0:
            await asyncio.sleep(wait)
        samples = array(
            "h",
            (
                int(0.3 * 32767 * math.sin(2 * math.pi * self.freq * (self.n + i) / RATE))
                for i in range(FRAME)
            ),
        )
        frame = av.AudioFrame(format="s16", layout="mono", samples=FRAME)
        frame.planes[0].update(samples.tobytes())
        frame.sample_rate = RATE
        frame.pts = self.n
        frame.time_base = fractions.Fraction(1, RATE)
        self.n += FRAME
        return frame


BARS = [
    (191, 191, 191),
    (191, 191, 0),
    (0, 191, 191),
    (0, 191, 0),
    (191, 0, 191),
    (191, 0, 0),
    (0, 0, 191),
    (0, 0, 0),
]
W, H, FPS = 640, 480, 30


def yuv(rgb):
    """BT.601 studio range, as the engine's frame.rs."""
    r, g, b = rgb
    y = ((66 * r + 129 * g + 25 * b + 128) >> 8) + 16
    u = ((-38 * r - 74 * g + 112 * b + 128) >> 8) + 128
    v = ((112 * r - 94 * g - 18 * b + 128) >> 8) + 128
    return y, u, v


class Bars(MediaStreamTrack):
    """Colour bars, I420, paced in real time."""

    kind = "video"

    def __init__(self):
        super().__init__()
        self.n = 0
        self.start = None
        planes = [bytearray(), bytearray(), bytearray()]
        for plane, (w, h) in enumerate([(W, H), (W // 2, H // 2), (W // 2, H // 2)]):
            row = bytearray()
            for x in range(w):
                row.append(yuv(BARS[x * 8 // w])[plane])
            planes[plane] = bytes(row) * h
        self.planes = planes

    async def recv(self):
        loop = asyncio.get_running_loop()
        if self.start is None:
            self.start = loop.time()
        wait = self.start + self.n / FPS - loop.time()
        if wait > 0:
            await asyncio.sleep(wait)
        frame = av.VideoFrame(W, H, "yuv420p")
        for i, data in enumerate(self.planes):
            plane = frame.planes[i]
            w = W if i == 0 else W // 2
            h = H if i == 0 else H // 2
            if plane.line_size == w:
                plane.update(data)
            else:
                padded = bytearray(plane.line_size * h)
                for r in range(h):
                    padded[r * plane.line_size : r * plane.line_size + w] = data[r * w : (r + 1) * w]
                plane.update(bytes(padded))
        frame.pts = self.n * 90000 // FPS
        frame.time_base = fractions.Fraction(1, 90000)
        self.n += 1
        return frame


def bar_means(frame):
    """Mean RGB of each bar of a decoded picture (middle half of each bar,
    rows from 10 % to 60 % of the height)."""
    rgb = frame.reformat(format="rgb24")
    plane = rgb.planes[0]
    data = bytes(plane)
    w, h, stride = rgb.width, rgb.height, plane.line_size
    means = []
    for bar in range(8):
        x0 = bar * w // 8 + w // 32
        x1 = (bar + 1) * w // 8 - w // 32
        sums = [0, 0, 0]
        n = 0
        for y in range(h // 10, h * 6 // 10, 4):
            for x in range(x0, x1, 4):
                p = y * stride + 3 * x
                sums[0] += data[p]
                sums[1] += data[p + 1]
                sums[2] += data[p + 2]
                n += 1
        means.append([round(s / max(n, 1)) for s in sums])
    return means


def send(obj):
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def goertzel(x, freq):
    n = len(x)
    if n == 0:
        return 0.0
    w = 2 * math.pi * freq / RATE
    coeff = 2 * math.cos(w)
    s1 = s2 = 0.0
    for i, v in enumerate(x):
        hann = 0.5 - 0.5 * math.cos(2 * math.pi * i / n)
        s = v / 32768.0 * hann + coeff * s1 - s2
        s2, s1 = s1, s
    return (s1 * s1 + s2 * s2 - coeff * s1 * s2) / (n / 4) ** 2


async def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--role", choices=["offer", "answer"], required=True)
    ap.add_argument("--freq", type=float, default=660.0)
    ap.add_argument("--seconds", type=float, default=4.0)
    ap.add_argument("--video", action="store_true")
    args = ap.parse_args()

    pc = RTCPeerConnection()
    pc.addTrack(Tone(args.freq))
    if args.video:
        pc.addTrack(Bars())
    received = array("h")
    video = {"frames": 0, "last": None}
    connected = asyncio.Event()

    @pc.on("connectionstatechange")
    async def on_state():
        print(f"aiortc: connection {pc.connectionState}", file=sys.stderr)
        if pc.connectionState == "connected":
            connected.set()

    @pc.on("track")
    def on_track(track):
        async def pull_video():
            while True:
                try:
                    frame = await track.recv()
                except Exception:
                    return
                video["frames"] += 1
                video["last"] = frame

        if track.kind == "video":
            asyncio.ensure_future(pull_video())
            return

        async def pull():
            while True:
                try:
                    frame = await track.recv()
                except Exception:
                    return
                channels = len(frame.layout.channels)
                # The plane's buffer may be padded past the samples.
                pcm = array("h", bytes(frame.planes[0]))[: frame.samples * channels]
                received.extend(pcm[::channels] if channels > 1 else pcm)

        asyncio.ensure_future(pull())

    if args.role == "offer":
        await pc.setLocalDescription(await pc.createOffer())
        send({"kind": "offer", "sdp": pc.localDescription.sdp})
        send({"kind": "end_of_candidates"})

    reader = asyncio.StreamReader()
    await asyncio.get_running_loop().connect_read_pipe(
        lambda: asyncio.StreamReaderProtocol(reader), sys.stdin
    )

    async def read_signals():
        pending = []
        while True:
            line = await reader.readline()
            if not line:
                return
            msg = json.loads(line)
            kind = msg["kind"]
            if kind == "offer":
                await pc.setRemoteDescription(RTCSessionDescription(msg["sdp"], "offer"))
                await pc.setLocalDescription(await pc.createAnswer())
                # aiortc gathers before answering: the answer carries its
                # candidates.
                send({"kind": "answer", "sdp": pc.localDescription.sdp})
                send({"kind": "end_of_candidates"})
            elif kind == "answer":
                await pc.setRemoteDescription(RTCSessionDescription(msg["sdp"], "answer"))
            elif kind == "candidate":
                line = msg["candidate"]
                c = candidate_from_sdp(line.split(":", 1)[1])
                # Our candidates are for the bundle (all m-lines share
                # one transport): give them to the first.
                c.sdpMid = None
                c.sdpMLineIndex = 0
                if pc.remoteDescription is None:
                    pending.append(c)
                else:
                    for p in pending:
                        await pc.addIceCandidate(p)
                    pending.clear()
                    await pc.addIceCandidate(c)
            elif kind == "bye":
                print(f"aiortc: peer said bye: {msg.get('reason')}", file=sys.stderr)

    signals = asyncio.ensure_future(read_signals())
    await asyncio.wait_for(connected.wait(), 15)
    await asyncio.sleep(args.seconds)
    last = received[-RATE:]
    rms = math.sqrt(sum(v * v for v in last) / max(len(last), 1)) / 32768.0
    freqs = [300.0, 440.0, 620.0, 660.0, 880.0, 1000.0]
    report = {
        "kind": "report",
        "received_ms": len(received) * 1000 // RATE,
        "rms": rms,
        "power": {str(int(f)): goertzel(last, f) for f in freqs},
    }
    if args.video:
        frame = video["last"]
        report["video"] = {
            "frames": video["frames"],
            "size": [frame.width, frame.height] if frame else None,
            "bars": bar_means(frame) if frame else None,
        }
    send(report)
    signals.cancel()
    await pc.close()


asyncio.run(main())
