"""Gradio imported for the chat reads and writes none of its type stubs (ui/gradio_import.py): on a
2-core CPU that was 1.3-1.5 s of every start. Run in a fresh interpreter, where gradio is not imported yet."""

import subprocess
import sys

COUNT_STUB_FILES_OPENED = """
import sys
opened = []
sys.addaudithook(lambda event, args: event == "open" and str(args[0]).endswith(".pyi") and opened.append(args[0]))
import assistant.ui
import gradio
assert gradio.Chatbot is not None and gradio.Blocks is not None
print(len(opened))
"""


def test_the_chat_imports_gradio_without_touching_its_type_stubs():
    done = subprocess.run([sys.executable, "-c", COUNT_STUB_FILES_OPENED], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split()[-1] == "0", "gradio's .pyi stubs were read or rewritten at import"
