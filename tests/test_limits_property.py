"""MAX_PIXELS / MAX_STEPS / MAX_FRAMES cannot be bypassed: for random graphs of the limited node types, with
values given as numbers, as strings, as {"__value__": x} and through links (constants and scaling nodes), a
graph the pre-flight accepts never makes more than the limits allow, computed the way ComfyUI computes it."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from comfy_worker.workflow.policy import Policy, check_policy
from comfy_worker_dev.emulator.catalogue import OBJECT_INFO_PATH

OBJECT_INFO = json.loads(OBJECT_INFO_PATH.read_text())
OBJECT_INFO = OBJECT_INFO.get("json", OBJECT_INFO)
MAX_PIXELS = 65536
MAX_STEPS = 10
MAX_FRAMES = 16
POLICY = Policy(max_pixels=MAX_PIXELS, max_steps=MAX_STEPS, max_frames=MAX_FRAMES, max_input_pixels=MAX_PIXELS)


@dataclass
class Image:
    """What ComfyUI would really make: sides in image pixels, and how many images."""

    width: int
    height: int
    count: int

    @property
    def total(self) -> int:
        return self.width * self.height * self.count


class Builder:
    """A random graph and, beside it, what ComfyUI computes for each node."""

    def __init__(self, draw: st.DrawFn) -> None:
        self.draw = draw
        self.graph: dict[str, Any] = {}
        self.real: dict[str, Image] = {}
        self.steps: list[int] = []
        self.frames: list[int] = []

    def add(self, class_type: str, inputs: dict[str, Any]) -> str:
        node_id = str(len(self.graph) + 1)
        self.graph[node_id] = {"class_type": class_type, "inputs": inputs}
        return node_id

    def number(self, value: int | float) -> Any:
        """`value` as a caller might give it: plainly, as a string, wrapped, or through a constant node."""
        form = self.draw(st.sampled_from(["int", "str", "wrapped", "link"]))
        if form == "str":
            return str(value)
        if form == "wrapped":
            return {"__value__": value}
        if form == "link":
            kind = "PrimitiveInt" if isinstance(value, int) else "PrimitiveFloat"
            return [self.add(kind, {"value": value}), 0]
        return value

    def source(self, latent: bool) -> str:
        width, height = (self.draw(st.integers(8, 512)) for _ in range(2))
        batch = self.draw(st.integers(1, 8))
        class_type = "EmptyLatentImage" if latent else "EmptyImage"
        inputs = {"width": self.number(width), "height": self.number(height), "batch_size": self.number(batch)}
        if not latent:
            inputs["color"] = 0
        node_id = self.add(class_type, inputs)
        # A latent's size is counted in image pixels (ComfyUI keeps width//8 x height//8 cells).
        self.real[node_id] = Image((width // 8) * 8, (height // 8) * 8, batch) if latent else Image(width, height, batch)
        return node_id

    def grow(self, node_id: str, latent: bool) -> str:
        image = self.real[node_id]
        step = self.draw(st.sampled_from(["scale_by", "repeat", "scale_to", "batch", "none"]))
        if step == "scale_by":
            factor = self.draw(st.sampled_from([0.5, 1.0, 1.5, 2.0, 3.0, 4.0]))
            if latent:
                new = self.add("LatentUpscaleBy", {"samples": [node_id, 0], "upscale_method": "nearest-exact",
                                                   "scale_by": self.number(factor)})
                cells = (round(image.width // 8 * factor), round(image.height // 8 * factor))
                self.real[new] = Image(cells[0] * 8, cells[1] * 8, image.count)
            else:
                new = self.add("ImageScaleBy", {"image": [node_id, 0], "upscale_method": "nearest-exact",
                                                "scale_by": self.number(factor)})
                self.real[new] = Image(round(image.width * factor), round(image.height * factor), image.count)
            return new
        if step == "repeat":
            amount = self.draw(st.integers(1, 16))
            kind, key = ("RepeatLatentBatch", "samples") if latent else ("RepeatImageBatch", "image")
            new = self.add(kind, {key: [node_id, 0], "amount": self.number(amount)})
            self.real[new] = Image(image.width, image.height, image.count * amount)
            return new
        if step == "scale_to" and not latent:
            width, height = self.draw(st.integers(8, 1024)), self.draw(st.integers(8, 1024))
            new = self.add("ImageScale", {"image": [node_id, 0], "upscale_method": "nearest-exact",
                                          "width": self.number(width), "height": self.number(height),
                                          "crop": "disabled"})
            self.real[new] = Image(width, height, image.count)
            return new
        if step == "batch" and not latent:
            other = self.source(False)
            new = self.add("ImageBatch", {"image1": [node_id, 0], "image2": [other, 0]})
            self.real[new] = Image(image.width, image.height, image.count + self.real[other].count)
            return new
        return node_id

    def finish(self, node_id: str, latent: bool) -> None:
        if latent:
            steps = self.draw(st.integers(1, 30))
            self.steps.append(steps)
            sampled = self.add("KSampler", {"model": ["0", 0], "seed": 1, "steps": self.number(steps), "cfg": 7.0,
                                            "sampler_name": "euler", "scheduler": "normal", "positive": ["0", 0],
                                            "negative": ["0", 0], "latent_image": [node_id, 0], "denoise": 1.0})
            self.real[sampled] = self.real[node_id]
            node_id = self.add("VAEDecode", {"samples": [sampled, 0], "vae": ["0", 0]})
            self.real[node_id] = self.real[sampled]
        self.add("SaveImage", {"images": [node_id, 0], "filename_prefix": "p"})


@st.composite
def graphs(draw: st.DrawFn) -> Builder:
    builder = Builder(draw)
    for _ in range(draw(st.integers(1, 2))):
        latent = draw(st.booleans())
        node_id = builder.source(latent)
        for _ in range(draw(st.integers(0, 4))):
            node_id = builder.grow(node_id, latent)
        builder.finish(node_id, latent)
    if draw(st.booleans()):
        frames = draw(st.integers(1, 40))
        builder.frames.append(frames)
        width, height = draw(st.integers(8, 128)), draw(st.integers(8, 128))
        video = builder.add("EmptyHunyuanLatentVideo", {"width": builder.number(width), "height": builder.number(height),
                                                        "length": builder.number(frames), "batch_size": 1})
        builder.real[video] = Image(width, height, frames)
    return builder


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(graphs())
def test_no_accepted_graph_exceeds_the_limits(built: Builder) -> None:
    violations = check_policy(built.graph, OBJECT_INFO, POLICY)
    if violations:
        return  # refused: nothing runs
    for node_id, image in built.real.items():
        assert image.total <= MAX_PIXELS, (node_id, image, built.graph)
    assert all(steps <= MAX_STEPS for steps in built.steps)
    assert all(frames <= MAX_FRAMES for frames in built.frames)


def test_the_issues_bypasses_are_refused() -> None:
    """Numbers as strings, wrapped values and a chain of links that grew 64x64 into 4 x 512x512."""
    as_string = {"1": {"class_type": "EmptyImage", "inputs": {"width": "512", "height": "512", "batch_size": 1,
                                                              "color": 0}},
                 "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "x"}}}
    wrapped = json.loads(json.dumps(as_string).replace('"512"', '{"__value__": 512}'))
    chain = {"1": {"class_type": "EmptyImage", "inputs": {"width": 64, "height": 64, "batch_size": 1, "color": 0}},
             "2": {"class_type": "ImageScaleBy", "inputs": {"image": ["1", 0], "upscale_method": "nearest-exact",
                                                             "scale_by": 8.0}},
             "3": {"class_type": "RepeatImageBatch", "inputs": {"image": ["2", 0], "amount": 4}},
             "4": {"class_type": "SaveImage", "inputs": {"images": ["3", 0], "filename_prefix": "x"}}}
    steps = {"1": {"class_type": "PrimitiveInt", "inputs": {"value": 50}},
             "2": {"class_type": "KSampler", "inputs": {"steps": ["1", 0], "seed": 1}}}
    for graph, rule in ((as_string, "MAX_PIXELS"), (wrapped, "MAX_PIXELS"), (chain, "MAX_PIXELS"), (steps, "MAX_STEPS")):
        assert rule in {v.rule for v in check_policy(graph, OBJECT_INFO, POLICY)}, graph
    ok = {"1": {"class_type": "EmptyImage", "inputs": {"width": "128", "height": 128, "batch_size": 1, "color": 0}},
          "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "x"}}}
    assert check_policy(ok, OBJECT_INFO, POLICY) == []
