"""Behaviour of the node classes the emulator runs for real (Pillow only), plus a pass-through for the
rest of the catalogue.

Values travelling on links: IMAGE = list of RGB PIL images (the batch), MASK = list of L images,
LATENT = `Latent`, AUDIO = `Audio`, VIDEO = `Video`; anything else is an `Opaque` token.
"""

from __future__ import annotations

import json
import logging
import os
import random
import re
import struct
import wave
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image, ImageFile, ImageFilter, ImageOps, PngImagePlugin

from .catalogue import Catalogue, Folders
from .faults import Faults
from .media import flac_bytes, mp4_placeholder

log = logging.getLogger(__name__)


class InterruptProcessing(Exception):
    """Raised at an interruption check, like comfy.model_management.InterruptProcessingException."""


class OutOfMemoryError(RuntimeError):
    """Stands in for torch.OutOfMemoryError; reported under torch's name."""


OutOfMemoryError.__module__ = "torch"
OutOfMemoryError.__qualname__ = "OutOfMemoryError"


@dataclass(frozen=True)
class Opaque:
    label: str

    def __str__(self) -> str:
        return f"<{self.label}>"


@dataclass
class Latent:
    width: int
    height: int
    batch: int
    seed: int = 0


@dataclass
class Audio:
    sample_rate: int
    channels: list[list[int]]


@dataclass
class Video:
    frames: list[Image.Image]
    fps: float


@dataclass
class NodeContext:
    node_id: str
    class_type: str
    prompt_id: str
    prompt: dict[str, Any]
    extra_data: dict[str, Any]
    folders: Folders
    catalogue: Catalogue
    disable_metadata: bool
    step: Callable[[int, int], None]   # reports sampler progress, checks interruption
    faults: Faults = field(default_factory=Faults)
    ui: dict[str, Any] = field(default_factory=dict)


NodeFn = Callable[..., tuple[Any, ...]]
IMPLEMENTATIONS: dict[str, NodeFn] = {}


def implements(*names: str) -> Callable[[NodeFn], NodeFn]:
    def register(fn: NodeFn) -> NodeFn:
        for n in names:
            IMPLEMENTATIONS[n] = fn
        return fn
    return register


def _color(rgb: int) -> tuple[int, int, int]:
    return ((rgb >> 16) & 0xFF, (rgb >> 8) & 0xFF, rgb & 0xFF)


def as_images(value: Any) -> list[Image.Image]:
    if isinstance(value, list) and value and all(isinstance(v, Image.Image) for v in value):
        return value
    # A value the emulator does not model (e.g. from a pass-through node): a small placeholder.
    return [Image.new("RGB", (64, 64), (128, 128, 128))]


def save_path(folder: Path, prefix: str, width: int = 0, height: int = 0) -> tuple[Path, str, int, str]:
    """(full folder, file stem, next counter, subfolder) like ComfyUI's get_save_image_path."""
    prefix = prefix.replace("%width%", str(width)).replace("%height%", str(height))
    norm = os.path.normpath(prefix)
    subfolder, stem = os.path.dirname(norm), os.path.basename(norm)
    full = Path(os.path.abspath(folder / subfolder))
    base = os.path.abspath(folder)
    if os.path.commonpath((base, str(full))) != base:
        raise Exception("**** ERROR: Saving image outside the output folder is not allowed."
                        f"\n full_output_folder: {full}\n         output_dir: {base}")
    full.mkdir(parents=True, exist_ok=True)
    pattern = re.compile(re.escape(stem) + r"_(\d+)_")
    counters = [int(m.group(1)) for name in os.listdir(full) if (m := pattern.match(name))]
    return full, stem, (max(counters) + 1 if counters else 1), subfolder


def _pnginfo(ctx: NodeContext) -> PngImagePlugin.PngInfo | None:
    if ctx.disable_metadata:
        return None
    info = PngImagePlugin.PngInfo()
    info.add_text("prompt", json.dumps(ctx.prompt))
    for key, value in (ctx.extra_data.get("extra_pnginfo") or {}).items():
        info.add_text(key, json.dumps(value))
    return info


def _save_images(ctx: NodeContext, images: Any, prefix: str, kind: str, compress: int = 4) -> list[dict]:
    frames = as_images(images)
    folder = ctx.folders.output if kind == "output" else ctx.folders.temp
    full, stem, counter, subfolder = save_path(folder, prefix, frames[0].width, frames[0].height)
    results = []
    for img in frames:
        name = f"{stem}_{counter:05}_.png"
        img.save(full / name, pnginfo=_pnginfo(ctx), compress_level=compress)
        results.append({"filename": name, "subfolder": subfolder, "type": kind})
        counter += 1
    return results


@implements("EmptyImage")
def empty_image(ctx: NodeContext, width: int, height: int, batch_size: int = 1, color: int = 0, **_: Any):
    return ([Image.new("RGB", (width, height), _color(color)) for _ in range(batch_size)],)


def _pillow(fn: Callable[[Any], Any], arg: Any) -> Any:
    """Retry with truncated images allowed, as ComfyUI's node_helpers.pillow does: only files whose
    headers are cut short still fail."""
    try:
        return fn(arg)
    except (OSError, ValueError):
        previous = ImageFile.LOAD_TRUNCATED_IMAGES
        ImageFile.LOAD_TRUNCATED_IMAGES = True
        try:
            return fn(arg)
        finally:
            ImageFile.LOAD_TRUNCATED_IMAGES = previous


def _loaded_transpose(img: Image.Image) -> Image.Image:
    out = ImageOps.exif_transpose(img) or img
    out.load()
    return out


@implements("LoadImage")
def load_image(ctx: NodeContext, image: str, **_: Any):
    path = ctx.folders.annotated_path(image)
    if path is None:
        raise ValueError(f"Invalid file path: {image!r}")
    with _pillow(Image.open, path) as img:
        frames, masks = [], []
        for i in range(getattr(img, "n_frames", 1)):
            img.seek(i)
            frame = _pillow(_loaded_transpose, img)
            frames.append(frame.convert("RGB"))
            alpha = frame.getchannel("A") if "A" in frame.getbands() else Image.new("L", frame.size, 255)
            masks.append(ImageOps.invert(alpha))
    return (frames, masks)


@implements("LoadImageMask")
def load_image_mask(ctx: NodeContext, image: str, channel: str = "alpha", **_: Any):
    """ComfyUI's LoadImageMask: one channel of the picture as a mask (alpha inverted); zeros without it."""
    path = ctx.folders.annotated_path(image)
    if path is None:
        raise ValueError(f"Invalid file path: {image!r}")
    with _pillow(Image.open, path) as img:
        frame = _pillow(_loaded_transpose, img).convert("RGBA")
    band = channel[0].upper()
    mask = frame.getchannel(band)
    return ([ImageOps.invert(mask) if band == "A" else mask],)


@implements("MaskToImage")
def mask_to_image(ctx: NodeContext, mask: Any, **_: Any):
    masks = mask if isinstance(mask, list) and all(isinstance(m, Image.Image) for m in mask) else []
    return ([m.convert("RGB") for m in masks] or as_images(None),)


@implements("LoadAudio")
def load_audio(ctx: NodeContext, audio: str, **_: Any):
    """WAV files (16-bit PCM) as ComfyUI's LoadAudio reads any format: samples per channel and the rate."""
    path = ctx.folders.annotated_path(audio)
    if path is None:
        raise ValueError(f"Invalid audio file: {audio!r}")
    try:
        with wave.open(str(path), "rb") as wav:
            rate, count, width = wav.getframerate(), wav.getnchannels(), wav.getsampwidth()
            frames = wav.readframes(wav.getnframes())
    except (wave.Error, EOFError) as exc:
        raise RuntimeError(f"Failed to load audio: {exc}") from None
    if width != 2:
        raise RuntimeError(f"Failed to load audio: the emulator reads 16-bit PCM, not {8 * width}-bit")
    samples = struct.unpack(f"<{len(frames) // 2}h", frames)
    return (Audio(rate, [list(samples[c::count]) for c in range(count)]),)


_EMULATED_VIDEO = re.compile(rb"emulated video (\d+)x(\d+) (\d+) frames @ ([\d.]+) fps")


@implements("LoadVideo")
def load_video(ctx: NodeContext, file: str, **_: Any):
    """The videos the emulator's SaveVideo writes (their size, frame count and rate), as frames."""
    path = ctx.folders.annotated_path(file)
    if path is None:
        raise ValueError(f"Invalid video file: {file!r}")
    found = _EMULATED_VIDEO.search(path.read_bytes()[:4096])
    if found is None:
        raise RuntimeError(f"The emulator reads only the videos it writes: {file!r}")
    width, height, count, fps = int(found[1]), int(found[2]), int(found[3]), float(found[4])
    return (Video([Image.new("RGB", (width, height), (128, 128, 128)) for _ in range(max(1, count))], fps),)


@implements("ImageInvert")
def image_invert(ctx: NodeContext, image: Any, **_: Any):
    return ([ImageOps.invert(i.convert("RGB")) for i in as_images(image)],)


_RESAMPLE = {"nearest-exact": Image.Resampling.NEAREST, "bilinear": Image.Resampling.BILINEAR,
             "area": Image.Resampling.BOX, "bicubic": Image.Resampling.BICUBIC,
             "lanczos": Image.Resampling.LANCZOS}


@implements("ImageScale")
def image_scale(ctx: NodeContext, image: Any, upscale_method: str, width: int, height: int,
                crop: str = "disabled", **_: Any):
    out = []
    for img in as_images(image):
        w, h = width, height
        if w == 0 and h == 0:
            out.append(img)
            continue
        if w == 0:
            w = max(1, round(img.width * h / img.height))
        if h == 0:
            h = max(1, round(img.height * w / img.width))
        src = img
        if crop == "center":
            src_ratio, dst_ratio = img.width / img.height, w / h
            if src_ratio > dst_ratio:
                cw = round(img.height * dst_ratio)
                x = (img.width - cw) // 2
                src = img.crop((x, 0, x + cw, img.height))
            elif src_ratio < dst_ratio:
                ch = round(img.width / dst_ratio)
                y = (img.height - ch) // 2
                src = img.crop((0, y, img.width, y + ch))
        out.append(src.resize((w, h), _RESAMPLE.get(upscale_method, Image.Resampling.BILINEAR)))
    return (out,)


@implements("ImageScaleBy")
def image_scale_by(ctx: NodeContext, image: Any, upscale_method: str, scale_by: float, **_: Any):
    resample = _RESAMPLE.get(upscale_method, Image.Resampling.BILINEAR)
    return ([img.resize((max(1, round(img.width * scale_by)), max(1, round(img.height * scale_by))), resample)
             for img in as_images(image)],)


@implements("ImageBlur")
def image_blur(ctx: NodeContext, image: Any, blur_radius: int = 1, sigma: float = 1.0, **_: Any):
    return ([i.filter(ImageFilter.GaussianBlur(radius=sigma)) for i in as_images(image)],)


@implements("SaveImage")
def save_image(ctx: NodeContext, images: Any, filename_prefix: str = "ComfyUI", **_: Any):
    ctx.ui["images"] = _save_images(ctx, images, filename_prefix, "output")
    return (images,)


def _temp_prefix() -> str:
    return "ComfyUI_temp_" + "".join(random.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(5))


@implements("PreviewImage")
def preview_image(ctx: NodeContext, images: Any, **_: Any):
    ctx.ui["images"] = _save_images(ctx, images, _temp_prefix(), "temp", compress=1)
    return (images,)


def _save_animated(ctx: NodeContext, images: Any, prefix: str, fps: float, fmt: str, **opts: Any):
    frames = as_images(images)
    full, stem, counter, subfolder = save_path(ctx.folders.output, prefix, frames[0].width,
                                               frames[0].height)
    name = f"{stem}_{counter:05}_.{fmt}"
    duration = int(1000.0 / fps) if fps else 100
    frames[0].save(full / name, save_all=True, append_images=frames[1:], duration=duration, loop=0, **opts)
    ctx.ui["images"] = [{"filename": name, "subfolder": subfolder, "type": "output"}]
    ctx.ui["animated"] = [len(frames) > 1]
    return (images,)


@implements("SaveAnimatedWEBP")
def save_animated_webp(ctx: NodeContext, images: Any, filename_prefix: str = "ComfyUI", fps: float = 6.0,
                       lossless: bool = True, quality: int = 80, **_: Any):
    return _save_animated(ctx, images, filename_prefix, fps, "webp", lossless=lossless, quality=quality)


@implements("SaveAnimatedPNG")
def save_animated_png(ctx: NodeContext, images: Any, filename_prefix: str = "ComfyUI", fps: float = 6.0,
                      compress_level: int = 4, **_: Any):
    return _save_animated(ctx, images, filename_prefix, fps, "png", compress_level=compress_level)


@implements("EmptyAudio")
def empty_audio(ctx: NodeContext, duration: float = 1.0, sample_rate: int = 44100, channels: int = 1,
                **_: Any):
    n = int(duration * sample_rate)
    return (Audio(sample_rate, [[0] * n for _ in range(max(1, channels))]),)


def _save_audio(ctx: NodeContext, audio: Any, prefix: str, kind: str) -> list[dict]:
    if not isinstance(audio, Audio):
        audio = Audio(44100, [[0] * 4410])
    folder = ctx.folders.output if kind == "output" else ctx.folders.temp
    full, stem, counter, subfolder = save_path(folder, prefix)
    name = f"{stem}_{counter:05}_.flac"
    (full / name).write_bytes(flac_bytes(audio.channels, audio.sample_rate))
    return [{"filename": name, "subfolder": subfolder, "type": kind}]


@implements("SaveAudio")
def save_audio(ctx: NodeContext, audio: Any, filename_prefix: str = "audio/ComfyUI", **_: Any):
    ctx.ui["audio"] = _save_audio(ctx, audio, filename_prefix, "output")
    return (audio,)


@implements("PreviewAudio")
def preview_audio(ctx: NodeContext, audio: Any, **_: Any):
    ctx.ui["audio"] = _save_audio(ctx, audio, _temp_prefix(), "temp")
    return (audio,)


@implements("CreateVideo")
def create_video(ctx: NodeContext, images: Any, fps: float = 30.0, **_: Any):
    return (Video(as_images(images), fps),)


@implements("SaveVideo")
def save_video(ctx: NodeContext, video: Any, filename_prefix: str = "video/ComfyUI", **_: Any):
    if not isinstance(video, Video):
        video = Video(as_images(None), 1.0)
    first = video.frames[0]
    full, stem, counter, subfolder = save_path(ctx.folders.output, filename_prefix, first.width, first.height)
    name = f"{stem}_{counter:05}_.mp4"
    with (full / name).open("wb") as out:
        out.write(mp4_placeholder(first.width, first.height, len(video.frames), video.fps))
        remaining = ctx.faults.video_bytes - out.tell() if ctx.faults.video_bytes else 0
        while remaining > 0:  # written in pieces: the emulator itself must not hold a large output
            piece = os.urandom(min(remaining, 1 << 22))
            out.write(piece)
            remaining -= len(piece)
    ctx.ui["images"] = [{"filename": name, "subfolder": subfolder, "type": "output"}]
    ctx.ui["animated"] = [True]
    return ()


@implements("PreviewAny")
def preview_any(ctx: NodeContext, source: Any = None, **_: Any):
    if isinstance(source, str):
        value = source
    elif isinstance(source, (int, float, bool)):
        value = str(source)
    elif source is None:
        value = "None"
    else:
        try:
            value = json.dumps(source, indent=4, ensure_ascii=False)
        except (TypeError, ValueError):
            value = str(source)
    ctx.ui["text"] = [value]
    return (value,)


@implements("CheckpointLoaderSimple")
def checkpoint_loader(ctx: NodeContext, ckpt_name: str, **_: Any):
    if ckpt_name not in (ctx.folders.list_models("checkpoints") or []):
        raise FileNotFoundError(f"Model in folder 'checkpoints' with filename '{ckpt_name}' not found.")
    return (Opaque(f"MODEL:{ckpt_name}"), Opaque(f"CLIP:{ckpt_name}"), Opaque(f"VAE:{ckpt_name}"))


def _load_safetensors_header(ctx: NodeContext, folder: str, name: str) -> dict[str, Any]:
    """The header of a model file as ComfyUI's loaders find it (every folder of the key, `/` sub-folders), read
    as `safetensors` does: 8 bytes of length, then JSON. A file that is not there or not safetensors fails."""
    for root in ctx.folders.model_dirs(folder):
        path = root / name
        if path.is_file():
            with path.open("rb") as handle:
                length = int.from_bytes(handle.read(8), "little")
                header = json.loads(handle.read(length)) if 0 < length < 100 * 1024 * 1024 else None
            if not isinstance(header, dict):
                raise RuntimeError(f"Error while deserializing header: {name} is not a safetensors file")
            return header
    raise FileNotFoundError(f"Model in folder '{folder}' with filename '{name}' not found.")


@implements("CreateHookLora", "CreateHookLoraModelOnly")
def create_hook_lora(ctx: NodeContext, lora_name: str, **_: Any):
    tensors = [k for k in _load_safetensors_header(ctx, "loras", lora_name) if k != "__metadata__"]
    return (Opaque(f"HOOKS:{lora_name}:{len(tensors)} tensors"),)


@implements("LoraLoader", "LoraLoaderModelOnly")
def lora_loader(ctx: NodeContext, lora_name: str, model: Any = None, clip: Any = None, **_: Any):
    _load_safetensors_header(ctx, "loras", lora_name)
    return (model, clip)


@implements("CLIPTextEncode")
def clip_text_encode(ctx: NodeContext, text: str = "", clip: Any = None, **_: Any):
    return (Opaque(f"CONDITIONING:{text}"),)


@implements("EmptyLatentImage")
def empty_latent(ctx: NodeContext, width: int = 512, height: int = 512, batch_size: int = 1, **_: Any):
    return (Latent(width // 8, height // 8, batch_size),)


@implements("KSampler")
def ksampler(ctx: NodeContext, seed: int = 0, steps: int = 20, latent_image: Any = None, **_: Any):
    for i in range(steps):
        ctx.step(i + 1, steps)
    base = latent_image if isinstance(latent_image, Latent) else Latent(8, 8, 1)
    return (Latent(base.width, base.height, base.batch, seed),)


@implements("VAEDecode")
def vae_decode(ctx: NodeContext, samples: Any = None, vae: Any = None, **_: Any):
    lat = samples if isinstance(samples, Latent) else Latent(8, 8, 1)
    rng = random.Random(lat.seed)
    return ([Image.new("RGB", (lat.width * 8, lat.height * 8),
                       (rng.randrange(256), rng.randrange(256), rng.randrange(256)))
             for _ in range(lat.batch)],)


def pass_through(ctx: NodeContext, inputs: dict[str, Any]) -> tuple[Any, ...]:
    """Outputs for a node the emulator does not model: an input of the same type, else a token."""
    info = ctx.catalogue.info(ctx.class_type)
    declared = {**(info.get("input", {}).get("optional") or {}), **(info.get("input", {}).get("required") or {})}
    out = []
    for slot, typ in enumerate(info.get("output", [])):
        same = [inputs[n] for n, entry in declared.items() if n in inputs and entry and entry[0] == typ]
        out.append(same[0] if same else Opaque(f"{typ}:{ctx.class_type}:{ctx.node_id}:{slot}"))
    return tuple(out)
