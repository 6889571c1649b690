"""Detail levels (assistant/vision/detail.py): how a photo is cut into views for low, auto and high,
with the image processors' real classes and published settings (no model needed); the image-token
counts the real processor writes are checked at full size in tests/integration/test_full_size.py."""

import pytest
import transformers
from PIL import Image as PILImage

from assistant.conversation import Conversation, Image, Message
from assistant.vision.detail import Tiling, tiling_for, views

# SmolVLM's published tiling: photos fit to 2048 px, cut into 512-px views.
SMOLVLM = transformers.SmolVLMImageProcessor(size={"longest_edge": 2048}, max_image_size={"longest_edge": 512})
PHONE_PHOTO = PILImage.new("RGB", (4032, 3024))  # 12 megapixels


def never_asked() -> int:
    raise AssertionError("only `auto` asks what the machine affords")


@pytest.mark.parametrize(
    ("size", "edge", "expected"),
    [
        ((1024, 768), 2048, 13),
        ((512, 512), 2048, 17),
        ((1024, 768), 1024, 5),
        ((3000, 1000), 1536, 4),
        ((640, 480), 512, 1),
    ],
)
def test_views_follow_the_photos_shape_and_the_longest_edge(size, edge, expected):
    assert views(*size, edge, 512) == expected


def test_low_is_one_view_of_a_photo_shrunk_to_it():
    tiling = tiling_for(SMOLVLM, "low", [PHONE_PHOTO], never_asked)
    assert tiling.processor_kwargs == {"do_image_splitting": False}
    assert max(tiling.prepared([PHONE_PHOTO])[0].size) == 512, "a 12-megapixel photo is shrunk before processing"


def test_high_is_the_models_own_tiling():
    tiling = tiling_for(SMOLVLM, "high", [PHONE_PHOTO], never_asked)
    assert tiling.processor_kwargs == {"do_image_splitting": True, "size": {"longest_edge": 2048}}
    assert tiling.prepared([PHONE_PHOTO])[0].size == (2048, 1536)


@pytest.mark.parametrize(("affordable", "edge"), [(1, None), (4, None), (5, 1024), (12, 1536), (13, 2048), (100, 2048)])
def test_auto_takes_the_most_views_the_machine_affords(affordable, edge):
    tiling = tiling_for(SMOLVLM, "auto", [PILImage.new("RGB", (1024, 768))], lambda: affordable)
    if edge is None:
        assert tiling.processor_kwargs == {"do_image_splitting": False}, f"{affordable} views afford no split"
    else:
        assert tiling.processor_kwargs == {"do_image_splitting": True, "size": {"longest_edge": edge}}
        assert views(1024, 768, edge, 512) <= affordable


def test_auto_fits_every_photo_of_the_prompt():
    wide, square = PILImage.new("RGB", (3000, 1000)), PILImage.new("RGB", (800, 800))
    tiling = tiling_for(SMOLVLM, "auto", [wide, square], lambda: 5)
    assert tiling.processor_kwargs["size"] == {"longest_edge": 1024}, "the square needs 5 views at 1024, 10 at 1536"


def test_llava_onevision_sees_one_tile_and_the_whole_at_low():
    processor = transformers.LlavaOnevisionImageProcessor()  # 384-px tiles
    assert tiling_for(processor, "low", [PHONE_PHOTO], never_asked).prepared([PHONE_PHOTO])[0].size == (384, 288)
    assert tiling_for(processor, "high", [PHONE_PHOTO], never_asked).longest_edge is None


def test_a_family_with_one_view_a_photo_is_left_as_it_is():
    processor = transformers.CLIPImageProcessor()  # LLaVA-1.5's
    for detail in ("low", "auto", "high"):
        assert tiling_for(processor, detail, [PHONE_PHOTO], never_asked).processor_kwargs == {}


def test_a_conversation_is_seen_at_the_most_detail_any_of_its_photos_asks():
    def photo(detail):
        return Image(PILImage.new("RGB", (8, 8)), detail=detail)

    conversation = Conversation().add(Message.user("a", [photo("low")]))
    assert conversation.detail == "low"
    conversation.add(Message.assistant("b")).add(Message.user("c", [photo("high"), photo("auto")]))
    assert conversation.detail == "high" and Conversation().detail == "auto"
    with pytest.raises(ValueError, match="unknown image detail 'max'"):
        photo("max")


def test_a_prompt_without_photos_is_left_as_it_is():
    for detail in ("low", "auto", "high"):
        assert tiling_for(SMOLVLM, detail, [], never_asked) == Tiling(), "a text question costs no measurement"
