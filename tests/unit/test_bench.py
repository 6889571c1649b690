"""The benchmark harness (bench/): what it counts and how it reports; no timing is asserted."""

import pytest
import torch
import transformers
from PIL import Image as PILImage

from assistant.cli import main as cli_main
from assistant.conversation import Conversation, Message
from assistant.models.composed import load_composed
from assistant.models.fast_decode import DecodeSpeed, convert_weights
from assistant.models.tiny import build_tiny_parts
from assistant.training.train import TrainConfig, train
from bench import decode, machine, suite


def small_lm(tied: bool):
    config = transformers.Qwen2Config(
        vocab_size=100,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        tie_word_embeddings=tied,
    )
    return transformers.Qwen2ForCausalLM(config)


@pytest.mark.parametrize("tied", [True, False])
def test_weight_bytes_per_token_skip_the_looked_up_embedding_unless_the_head_reads_it(tied):
    model = small_lm(tied)
    every = sum(p.numel() * 4 for p in model.parameters())  # parameters() lists a tied weight once
    embedding = model.get_input_embeddings().weight.numel() * 4
    assert decode.weight_bytes_per_token(model) == (every if tied else every - embedding)


def test_int8_weights_count_their_bytes_and_scales():
    model = small_lm(tied=False)
    linear_params = sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Linear))
    float_bytes = decode.weight_bytes_per_token(model)
    convert_weights(model, "int8")
    int8_bytes = decode.weight_bytes_per_token(model)
    rows = sum(m.weight.shape[0] for m in model.modules() if isinstance(m, torch.nn.Linear))
    norms = float_bytes - linear_params * 4
    assert int8_bytes == linear_params + rows * (2 + 1) + norms // 2, (
        "int8 values, a bfloat16 scale and an int8 zero per row; bf16 norms"
    )


def rows(engine_tokens_per_s, photo_ttft):
    def row(prompt, runtime, tokens_per_s, ttft):
        return {
            "model": "starter",
            "prompt": prompt,
            "runtime": runtime,
            "prompt_tokens": 50,
            "new_tokens": 64,
            "time_to_first_token_s": ttft,
            "tokens_per_s": tokens_per_s,
            "weight_bytes_per_token": 100_000_000,
            "same_tokens_as_baseline": "" if runtime.startswith("baseline") else "64/64",
            "linear_layers_bytes_per_s": 4e9,
        }

    return [
        row("text", "baseline: transformers generate, float32", 10.0, 0.5),
        row("text", "engine: x", engine_tokens_per_s, 0.2),
        row("photo + text", "baseline: transformers generate, float32", 10.0, 0.6),
        row("photo + text", "engine: x", engine_tokens_per_s, photo_ttft),
    ]


def report(decode_rows, **sections):
    machine = {"measured read bandwidth GB/s": 10.0, "cores": 2}
    return {"command": "assistant bench", "date": "today", "machine": machine, "decode": decode_rows, **sections}


def test_the_report_pairs_each_figure_with_its_baseline_and_judges_the_targets():
    text = suite.markdown(report(rows(25.0, 0.8), peer={"error": "llama-cpp-python is not installed: pip install ..."}))
    assert "| starter | text | engine: x | 0.20 | 25.0 | 2.50x | 100 | 25% | 40% | 64/64 |" in text
    assert "- engine decode >= 2x transformers: 2.50x, met" in text
    assert "- >= 50% of the bandwidth limit: 25%, NOT met" in text
    assert "- time to first token, photo + question <= 1 s: 0.80 s, met" in text
    assert "Peer not measured: llama-cpp-python is not installed" in text
    slow = suite.markdown(report(rows(15.0, 1.4)))
    assert "1.50x, NOT met" in slow and "1.40 s, NOT met" in slow


def test_a_failed_section_says_why_and_the_others_still_report():
    text = suite.markdown(
        report(
            rows(25.0, 0.8),
            http={"error": "RuntimeError: the server did not start"},
            memory=[{"profile": "tiny", "load_s": 1.0, "peak_mib": 300.0}],
        )
    )
    assert (
        "## Several users at once (HTTP API, starter)\n\nNot measured: RuntimeError: the server did not start" in text
    )
    assert "| tiny | 1.0 | 300 |" in text


def vlm_row(decoding: str, detail: str, first_s: float, follow_up_s: float) -> dict:
    return {
        "model": "smolvlm2-500m", "decoding": decoding, "photo": "1024 x 768", "detail": detail,
        "image_tokens": 64, "time_to_first_token_s": first_s, "follow_up_first_token_s": follow_up_s,
        "follow_up_new_tokens": 16, "tokens_per_s": 50.0, "compile_s": None,
    }  # fmt: skip


def test_the_vlm_section_pairs_each_detail_level_with_generate_at_the_same_level():
    vlm_rows = [
        vlm_row("generate", "low", 2.0, 2.1),
        vlm_row("generate", "high", 24.0, 24.0),
        vlm_row("int8-compiled", "low", 1.0, 0.3),
        vlm_row("int8-compiled", "high", 12.0, 0.5),
    ]
    text = suite.markdown(report(rows(25.0, 0.8), vlm=vlm_rows))
    assert "## Photo questions, the cpu profile's VLM at full size" in text
    assert (
        "| int8-compiled | 1024 x 768 | low | 64 | 1.00 | - | 0.30 | 16 | 50.0 | - | 2.0x faster | 7.0x faster |"
        in text
    )
    assert (
        "| int8-compiled | 1024 x 768 | high | 64 | 12.00 | - | 0.50 | 16 | 50.0 | - | 2.0x faster | 48.0x faster |"
        in text
    )
    assert "| generate | 1024 x 768 | low | 64 | 2.00 | - | 2.10 | 16 | 50.0 | - | - | - |" in text


def test_the_harness_forces_equal_lengths_and_measures_agreement_on_a_real_composed_model(tmp_path, cache_dir):
    vision, lm = build_tiny_parts(tmp_path / "parts")
    directory = train(
        TrainConfig(
            output=tmp_path / "composed",
            encoder=str(vision),
            language_model=str(lm),
            fusion="mlp",
            image_tokens=4,
            scenes=8,
            steps=2,
            batch_size=4,
            cache_dir=cache_dir,
            lm_dtype="float32",
        )
    )
    conversation = Conversation().add(Message.user("What colour?", [PILImage.new("RGB", (40, 40), "red")]))
    baseline_model = load_composed(directory, torch.device("cpu"), torch.float32, cache_dir)
    baseline, baseline_ids = decode.composed_baseline_run(baseline_model, conversation, 12, "tiny", "photo + text")
    engine_model = load_composed(
        directory, torch.device("cpu"), torch.float32, cache_dir, DecodeSpeed("float32", compile=False)
    )
    engine, text = decode.engine_run(engine_model, conversation, 12, "tiny", "photo + text", "engine")
    assert baseline.new_tokens == engine.new_tokens == len(baseline_ids) == 12, "both forced to 12 new tokens"
    assert baseline.prompt_tokens == engine.prompt_tokens
    assert decode.agreement(baseline_model.tokenizer, text, baseline_ids) == "12/12", (
        "same float32 weights, same greedy reply"
    )
    assert engine.tokens_per_s > 0 and engine.linear_layers_bytes_per_s > 0


def test_assistant_bench_answers_help_and_rejects_unknown_sections(capfd):
    # `assistant bench` runs `python -m bench.suite` in a subprocess: capfd sees its output.
    assert cli_main(["bench", "--help"]) == 0
    assert "--skip" in capfd.readouterr().out, "bench.suite's help lists its flags"
    assert cli_main(["bench", "--skip", "gpu"]) != 0, "an unknown section is an error"
    assert "unknown sections ['gpu']" in capfd.readouterr().err


def test_the_bandwidth_is_judged_on_the_best_read_and_shown_with_its_spread():
    bandwidth = machine.Bandwidth((16e9, 33e9, 31e9, 34e9, 30e9))
    assert bandwidth.best == 34e9
    details = machine.details(torch.device("cpu"), bandwidth)
    assert details["measured read bandwidth GB/s"] == 34.0
    assert details["read bandwidth GB/s, lowest / median / best"] == "16.0 / 31.0 / 34.0 over 5 reads"
