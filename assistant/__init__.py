"""A multimodal virtual assistant: text, photos and voice in, a streamed answer out.

The public face is `assistant.core` (what the browser chat, the HTTP API and the command line use),
with the reply's events in `assistant.events`, the errors in `assistant.errors` and the settings in
`assistant.settings`. Importing the package loads nothing heavy: events and settings need no torch.

    from assistant.core import Assistant
    from assistant.settings import load_settings

    assistant = Assistant.from_settings(load_settings())
"""

import logging

# transformers imports torchao (our int8 decode) whenever it is installed, and torchao registers enums
# with torch.compile in a way torch 2.14 warns about at every start; nothing is wrong for our use.
logging.getLogger("torch.utils._pytree").setLevel(logging.ERROR)
# torch.compile on a CPU-only machine says it found no CUDA runtime, which is expected.
logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)
