"""Check tools/whisper_convert.py: the converted models must behave like the CTranslate2 original.

    python -m tools.validate_convert [--ct2-dir DIR] [--work-dir DIR]

Converts the CT2 model to transformers and openai-whisper form, then checks:
  1. round trip: the transformers dir converted back by CTranslate2's own converter gives the same
     model.bin variables, bit for bit (for a float16 original, the packaged model's dtype);
  2. the encoder output for the same log-mel features, numerically;
  3. the greedy transcript (language "en", no timestamps, no temperature fallback) of a few espeak-ng
     phrases, against faster-whisper's at compute_type float32;
  4. the language detected for a French phrase.
Exits 1 when anything differs. openai-whisper is skipped, and said so, when it is not installed.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

from bench import tts
from tools import whisper_convert

PHRASES = (
    "What colour is the car in this photo?",
    "Will it rain in London tomorrow?",
    "Please read the text on this sign.",
)
FRENCH = ("Bonjour, je voudrais un café et un croissant, s'il vous plaît.", "fr")  # (phrase, espeak voice)
CPU_THREADS = 2
# Float32 everywhere, but the backends sum in different orders (oneDNN/MKL vs CTranslate2's GEMM),
# so encoder outputs (values of order 1-10) agree to about 1e-3, not bit for bit.
ENCODER_TOLERANCE = 1e-2


def round_trip_differences(hf_dir: Path, ct2_dir: Path) -> list[str]:
    """Names of the variables of `ct2_dir`'s model.bin that CTranslate2's converter, run on `hf_dir`,
    does not reproduce exactly (dtype, shape and bits). Variables the converter adds (flags newer
    than the original) are not differences."""
    from ctranslate2.converters import TransformersConverter

    original, original_aliases = whisper_convert.read_ct2_model(ct2_dir / "model.bin")
    with tempfile.TemporaryDirectory() as tmp:
        TransformersConverter(str(hf_dir)).convert(tmp, quantization="float16", force=True)
        again, again_aliases = whisper_convert.read_ct2_model(Path(tmp) / "model.bin")
    differences = [
        name for name, value in original.items()
        if name not in again or value.dtype != again[name].dtype or not torch.equal(value, again[name])
    ]  # fmt: skip
    return differences + (["aliases"] if original_aliases != again_aliases else [])


class FasterWhisper:
    """The reference: faster-whisper on the CT2 dir, float32 (no quantization error)."""

    def __init__(self, ct2_dir: Path):
        from faster_whisper import WhisperModel

        self.model = WhisperModel(str(ct2_dir), device="cpu", compute_type="float32", cpu_threads=CPU_THREADS)

    def features(self, samples: np.ndarray) -> np.ndarray:
        """Log-mel features padded to 30 s: float32 [n_mels, 3000]."""
        fe = self.model.feature_extractor
        return np.ascontiguousarray(fe(samples, padding=fe.n_samples)[:, : fe.nb_max_frames])

    def encode(self, features: np.ndarray) -> np.ndarray:
        """Encoder output: float32 [1500, d_model]."""
        import ctranslate2

        return np.array(self.model.model.encode(ctranslate2.StorageView.from_array(features[None]), to_cpu=True))[0]

    def transcribe(self, samples: np.ndarray) -> str:
        segments, _ = self.model.transcribe(
            samples, language="en", beam_size=1, temperature=0.0, without_timestamps=True, vad_filter=False
        )
        return " ".join(segment.text.strip() for segment in segments)

    def language(self, samples: np.ndarray) -> str:
        return self.model.detect_language(samples)[0]


class Transformers:
    """The converted transformers model, greedy."""

    def __init__(self, hf_dir: Path):
        from transformers import WhisperForConditionalGeneration, WhisperProcessor

        self.processor = WhisperProcessor.from_pretrained(hf_dir)
        self.model = WhisperForConditionalGeneration.from_pretrained(hf_dir).eval()

    @torch.inference_mode()
    def encode(self, features: np.ndarray) -> np.ndarray:
        return self.model.model.encoder(torch.from_numpy(features)[None]).last_hidden_state[0].numpy()

    @torch.inference_mode()
    def transcribe(self, samples: np.ndarray) -> str:
        """Through transformers' long-form input path (unpadded features + attention mask), which pads
        the log-mel of the speech with zeros up to 30 s as openai-whisper and faster-whisper do. The
        processor's default pads the audio with silence before the log-mel instead: a different
        input to the same weights, enough to flip a close call ("sign" / "side" at 0.15 nats)."""
        inputs = self.processor(
            samples, sampling_rate=tts.SAMPLE_RATE, return_tensors="pt",
            truncation=False, padding="longest", return_attention_mask=True,
        )  # fmt: skip
        ids = self.model.generate(
            inputs.input_features, attention_mask=inputs.attention_mask,
            language="en", task="transcribe", num_beams=1, do_sample=False,
        )  # fmt: skip
        return self.processor.batch_decode(ids, skip_special_tokens=True)[0].strip()

    @torch.inference_mode()
    def language(self, samples: np.ndarray) -> str:
        features = self.processor(samples, sampling_rate=tts.SAMPLE_RATE, return_tensors="pt").input_features
        token = self.processor.tokenizer.convert_ids_to_tokens(self.model.detect_language(features).tolist())[0]
        return token.strip("<|>")


class OpenAIWhisper:
    """The converted openai-whisper checkpoint, greedy, fp32."""

    def __init__(self, pt_file: Path):
        import whisper

        self.model = whisper.load_model(str(pt_file), device="cpu")

    @torch.inference_mode()
    def encode(self, features: np.ndarray) -> np.ndarray:
        return self.model.encoder(torch.from_numpy(features)[None]).numpy()[0]

    def transcribe(self, samples: np.ndarray) -> str:
        result = self.model.transcribe(
            samples, language="en", temperature=0.0, beam_size=None, without_timestamps=True, fp16=False
        )
        return result["text"].strip()

    def language(self, samples: np.ndarray) -> str:
        import whisper

        mel = whisper.log_mel_spectrogram(whisper.pad_or_trim(samples), self.model.dims.n_mels)
        _, probabilities = self.model.detect_language(mel)
        return max(probabilities, key=probabilities.get)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ct2-dir", type=Path)
    parser.add_argument("--work-dir", type=Path, default=whisper_convert.default_work_dir())
    args = parser.parse_args(argv)
    torch.set_num_threads(CPU_THREADS)
    ct2_dir = args.ct2_dir or whisper_convert.default_ct2_dir()
    hf_dir, pt_file = whisper_convert.write_both(ct2_dir, args.work_dir)
    failures = 0

    if whisper_convert.load_ct2(ct2_dir).stored_dtype == torch.float16:
        differences = round_trip_differences(hf_dir, ct2_dir)
        failures += len(differences)
        print(f"round trip CT2 -> transformers -> CT2: {'identical' if not differences else differences}")
    else:
        print("round trip skipped: the CT2 model is not float16, so requantizing is not expected to be exact")

    reference = FasterWhisper(ct2_dir)
    candidates = {"transformers": lambda: Transformers(hf_dir)}
    if importlib.util.find_spec("whisper") is not None:
        candidates["openai-whisper"] = lambda: OpenAIWhisper(pt_file)
    else:
        print("openai-whisper is not installed: the .pt was written but not checked")

    audio = {phrase: tts.speak(phrase) for phrase in PHRASES}
    expected = {phrase: reference.transcribe(samples) for phrase, samples in audio.items()}
    french = tts.speak(FRENCH[0], voice=FRENCH[1])
    expected_language = reference.language(french)
    features = reference.features(audio[PHRASES[0]])
    reference_encoding = reference.encode(features)
    for name, load in candidates.items():
        backend = load()
        diff = float(np.abs(backend.encode(features) - reference_encoding).max())
        print(f"{name}: encoder max |diff| vs CTranslate2 = {diff:.2e} (tolerance {ENCODER_TOLERANCE:.0e})")
        failures += diff > ENCODER_TOLERANCE
        for phrase, samples in audio.items():
            text = backend.transcribe(samples)
            same = text == expected[phrase]
            failures += not same
            print(f"  {'same' if same else 'DIFF'}  spoken: {phrase!r}")
            print(f"        faster-whisper: {expected[phrase]!r}\n        {name}: {text!r}")
        language = backend.language(french)
        failures += language != expected_language
        print(
            f"  {'same' if language == expected_language else 'DIFF'}  language of a French phrase: "
            f"faster-whisper {expected_language!r}, {name} {language!r}"
        )
    print("all match" if not failures else f"{failures} mismatches")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
