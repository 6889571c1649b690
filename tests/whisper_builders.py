"""Tiny random-weight Whisper models for tests, in the two formats the speech backends load.

    build_tiny_hf_whisper(directory)      -> a transformers model directory (config, weights,
                                             generation config, feature extractor, tokenizer)
    build_tiny_openai_whisper(path)       -> an openai-whisper ``.pt`` checkpoint

Both are built offline in about a second. The architecture is the real one with tiny widths; the
parts the decoding code reads are real-sized: 80 mel bins, 1500 encoder positions (30 s of audio
is 3000 mel frames, halved by the encoder's strided convolution), Whisper's special tokens (start
of transcript, language, task, no-speech, no-timestamps and the 1501 timestamp tokens 0.00-30.00 s)
in Whisper's order, and a generation config with the fields real checkpoints have. The weights are
random, so the transcribed text is noise: tests assert behaviour, never words.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
import transformers
from tokenizers import AddedToken, Tokenizer, models, pre_tokenizers, trainers
from transformers.models.whisper.tokenization_whisper import LANGUAGES

SAMPLE_RATE_HZ = 16_000
MEL_BINS = 80  # large-v3 and turbo have 128; every other Whisper has 80
AUDIO_POSITIONS = 1500  # 30 s window = 3000 mel frames of 10 ms, halved by the encoder's stride-2 conv
TIMESTAMP_STEP_S = 0.02  # one timestamp token per 20 ms
TIMESTAMP_TOKENS = 1501  # <|0.00|> ... <|30.00|>
# The decoder context: 448 in real checkpoints. Small here, so that a random model, which never
# stops early, writes at most this many tokens per 30 s window and the tests stay fast.
TEXT_POSITIONS = 48
WIDTH = 32  # d_model of encoder and decoder
HEADS = 2
LAYERS = 2

# Enough text for a few hundred byte-level BPE merges; any text still encodes (all 256 bytes are in
# the base alphabet).
_CORPUS = (
    " What colour is the car in this photo?",
    " How many people are standing on the beach?",
    " Will it rain in London tomorrow? The weather is nice this weekend.",
    " Thank you very much. Bonjour, merci beaucoup. Guten Tag, danke schön.",
    " The quick brown fox jumps over the lazy dog. 0 1 2 3 4 5 6 7 8 9.",
)
_BPE_VOCAB_SIZE = 320
# A few of the symbols real checkpoints suppress (their suppress_tokens list is ~90 ids of these).
_SUPPRESSED_SYMBOLS = tuple('"#()*+/:;<=>@[]^_{|}~')


def _special_tokens() -> list[str]:
    """Whisper's special tokens in the order of the real multilingual vocabulary (large-v3)."""
    languages = [f"<|{code}|>" for code in LANGUAGES]
    return [
        "<|endoftext|>",
        "<|startoftranscript|>",
        *languages,
        "<|translate|>",
        "<|transcribe|>",
        "<|startoflm|>",
        "<|startofprev|>",
        "<|nospeech|>",  # <|nocaptions|> before large-v3; always right before <|notimestamps|>
        "<|notimestamps|>",
    ]


def _timestamp_tokens() -> list[AddedToken]:
    """<|0.00|> ... <|30.00|>: added but not special, as in the real tokenizers (decode drops them by pattern)."""
    return [
        AddedToken(f"<|{i * TIMESTAMP_STEP_S:.2f}|>", special=False, normalized=False, lstrip=False, rstrip=False)
        for i in range(TIMESTAMP_TOKENS)
    ]


def _make_tokenizer() -> transformers.WhisperTokenizer:
    """Byte-level BPE trained in-process, then Whisper's specials and timestamps after it, as in the real vocabulary."""
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(
        vocab_size=_BPE_VOCAB_SIZE, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False
    )
    bpe.train_from_iterator(_CORPUS, trainer)
    trained = json.loads(bpe.to_str())["model"]
    merges = [tuple(merge) if isinstance(merge, list) else tuple(merge.split(" ")) for merge in trained["merges"]]
    specials = _special_tokens()
    tokenizer = transformers.WhisperTokenizer(
        vocab=trained["vocab"],
        merges=merges,
        extra_special_tokens=specials[1:],  # [0] is bos/eos/unk
    )
    tokenizer.add_tokens(_timestamp_tokens())
    _check_order(tokenizer, specials)
    return tokenizer


def _check_order(tokenizer: transformers.WhisperTokenizer, specials: list[str]) -> None:
    """Whisper's decoding code relies on the ids' order: specials contiguous, then the timestamps.

    The no-speech token is no_timestamps - 1 and the first timestamp is no_timestamps + 1.
    """
    ids = tokenizer.convert_tokens_to_ids(specials + ["<|0.00|>", "<|30.00|>"])
    expected = list(range(ids[0], ids[0] + len(specials) + 1)) + [ids[0] + len(specials) + TIMESTAMP_TOKENS - 1]
    if ids != expected:
        raise AssertionError(f"Whisper special token ids are out of order: {ids[:3]}...{ids[-3:]}")


def _generation_config(model: transformers.WhisperForConditionalGeneration, tokenizer) -> None:
    """Fill in the fields of a real multilingual checkpoint's generation_config.json."""
    ids = tokenizer.convert_tokens_to_ids
    config = model.generation_config
    end = ids("<|endoftext|>")
    config.bos_token_id = config.eos_token_id = config.pad_token_id = end
    config.decoder_start_token_id = ids("<|startoftranscript|>")
    config.lang_to_id = {f"<|{code}|>": ids(f"<|{code}|>") for code in LANGUAGES}
    config.task_to_id = {"translate": ids("<|translate|>"), "transcribe": ids("<|transcribe|>")}
    config.no_timestamps_token_id = ids("<|notimestamps|>")
    config.prev_sot_token_id = ids("<|startofprev|>")
    config.is_multilingual = True
    # Language detected, then transcribe: what the original checkpoints ship (deprecated, still read).
    config.forced_decoder_ids = [[1, None], [2, ids("<|transcribe|>")]]
    config.begin_suppress_tokens = [ids("Ġ"), end]  # no leading blank and no empty transcript
    config.suppress_tokens = sorted(ids(symbol) for symbol in _SUPPRESSED_SYMBOLS)
    config.max_initial_timestamp_index = 50  # the first timestamp is at most 1.00 s
    config.max_length = TEXT_POSITIONS
    config.return_timestamps = False
    config.alignment_heads = [[LAYERS - 1, head] for head in range(HEADS)]
    config._from_model_config = False  # as loaded from a real generation_config.json


def build_tiny_hf_whisper(directory: str | os.PathLike, seed: int = 0) -> Path:
    """Save a tiny random transformers Whisper (model + WhisperProcessor) to `directory`; returns it.

    Loads with ``WhisperForConditionalGeneration.from_pretrained`` and ``WhisperProcessor.from_pretrained``.
    The same seed gives the same weights; the caller's torch RNG is left untouched.
    """
    tokenizer = _make_tokenizer()
    processor = transformers.WhisperProcessor(
        feature_extractor=transformers.WhisperFeatureExtractor(feature_size=MEL_BINS), tokenizer=tokenizer
    )
    end = tokenizer.convert_tokens_to_ids("<|endoftext|>")
    config = transformers.WhisperConfig(
        vocab_size=len(tokenizer),
        num_mel_bins=MEL_BINS,
        d_model=WIDTH,
        encoder_layers=LAYERS,
        decoder_layers=LAYERS,
        encoder_attention_heads=HEADS,
        decoder_attention_heads=HEADS,
        encoder_ffn_dim=2 * WIDTH,
        decoder_ffn_dim=2 * WIDTH,
        max_source_positions=AUDIO_POSITIONS,
        max_target_positions=TEXT_POSITIONS,
        bos_token_id=end,
        eos_token_id=end,
        pad_token_id=end,
        decoder_start_token_id=tokenizer.convert_tokens_to_ids("<|startoftranscript|>"),
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = transformers.WhisperForConditionalGeneration(config)
    _generation_config(model, tokenizer)
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(directory)
    processor.save_pretrained(directory)
    return directory


def build_tiny_openai_whisper(path: str | os.PathLike, seed: int = 0) -> Path:
    """Save a tiny random openai-whisper checkpoint ``{"dims", "model_state_dict"}`` to `path`; returns it.

    n_vocab is the multilingual vocabulary's 51865, so that whisper's own tokenizer (tiktoken ranks
    shipped inside the package) matches the embeddings; everything else is tiny.
    """
    from whisper.model import ModelDimensions, Whisper

    dims = ModelDimensions(
        n_mels=MEL_BINS,
        n_audio_ctx=AUDIO_POSITIONS,
        n_audio_state=WIDTH,
        n_audio_head=HEADS,
        n_audio_layer=LAYERS,
        n_vocab=51865,  # multilingual, 99 languages (large-v3's 51866 adds Cantonese)
        n_text_ctx=TEXT_POSITIONS,
        n_text_state=WIDTH,
        n_text_head=HEADS,
        n_text_layer=LAYERS,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = Whisper(dims)
        # Whisper leaves this one as torch.empty (real checkpoints overwrite it): uninitialised
        # memory, sometimes NaN. Initialised here as GPT-2-style models do.
        torch.nn.init.normal_(model.decoder.positional_embedding, std=0.02)
    if not all(torch.isfinite(tensor).all() for tensor in model.state_dict().values()):
        raise AssertionError("the tiny openai-whisper model has non-finite weights")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"dims": dims.__dict__, "model_state_dict": model.state_dict()}, path)
    return path
