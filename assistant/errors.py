"""The errors a user can cause or fix. Each carries a one-line, user-facing message; anything else
that escapes is a bug and is reported as such."""


class AssistantError(Exception):
    """Base class: str(error) is a complete sentence meant for the user."""


class SettingsError(AssistantError):
    """A setting has a wrong value (names the setting, its source and what is allowed)."""


class MediaError(AssistantError):
    """An uploaded image or audio file was refused (corrupt, unsupported, over a limit)."""


class MediaTooLargeError(MediaError):
    """A file over a size or length limit (HTTP 413 in the API)."""


class SpeechError(AssistantError):
    """Speech could not be transcribed: no speech, a backend or model that is missing, a bad option."""


class SynthesisError(AssistantError):
    """No voice is available, or the text cannot be spoken."""


class ModelUnavailableError(AssistantError):
    """A model is neither in the local cache nor downloadable, or a local path is not a model."""


class PersonaError(AssistantError):
    """An unknown or malformed persona."""


class GenerationOptionsError(AssistantError, ValueError):
    """A sampling option is out of range or options contradict each other."""


class ContextOverflowError(AssistantError):
    """The newest message alone does not fit in the model's context."""


class BusyError(AssistantError):
    """The request queue is full; try again shortly."""


class RemoteModelError(AssistantError):
    """The remote model server could not be reached or answered with an error."""
