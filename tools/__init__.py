"""Tools run by hand from the repository root, outside the app and its tests:

    python -m tools.whisper_convert --to transformers OUT   # Whisper: CTranslate2 -> transformers, openai-whisper
    python -m tools.validate_convert                        # that conversion, checked against faster-whisper

See tools/README.md.
"""
