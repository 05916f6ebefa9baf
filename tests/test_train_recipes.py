"""Each recipe's stage configuration is the one `docs/training.md` tabulates, and the official examples are the
official code's templates, cut into its tokenizer calls."""

from pathlib import Path

import pytest

from nextgpt.train import data
from nextgpt.train.stages import RECIPES, Recipe, StageConfig, default_recipe, recipe_of

DOC = Path(__file__).resolve().parents[1] / "docs" / "training.md"


def recipes_table() -> list[dict[str, str]]:
    """The rows of the first table under the heading `## Recipes`."""
    lines = DOC.read_text().splitlines()
    start = lines.index("## Recipes")
    rows = []
    for line in lines[start + 1:]:
        if line.startswith("## "):
            break
        if line.startswith("|"):
            rows.append([c.strip() for c in line.strip().strip("|").split("|")])
        elif rows:
            break
    header, _, *body = rows
    return [dict(zip(header, row)) for row in body]


def as_recipe(row: dict[str, str]) -> Recipe:
    return Recipe(
        examples=row["examples"], trains=tuple(t.strip() for t in row["trains"].split(",")),
        video_l2=float(row["video L2 weight"]), schedule=row["schedule"],
        warmup=int(row["warm-up steps, at least"]), warmup_share=float(row["warm-up share"]),
    )


def test_the_documented_table_is_the_code():
    table = {(row["recipe"], int(row["stage"])): as_recipe(row) for row in recipes_table()}
    assert set(table) == {(name, stage) for name, stages in RECIPES.items() for stage in stages}
    for (name, stage), documented in table.items():
        assert RECIPES[name][stage] == documented, (name, stage)


def test_the_7b_preset_trains_the_official_way_by_default_and_the_others_the_nano_way(tmp_path):
    assert default_recipe("nextgpt-7b-tiva-v0") == "official"
    assert default_recipe("tiny") == "nano" and default_recipe("nano") == "nano"
    assert recipe_of(StageConfig(stage=3, model="nextgpt-7b-tiva-v0")).video_l2 == 2.0
    assert recipe_of(StageConfig(stage=3, model="nextgpt-7b-tiva-v0", recipe="nano")).video_l2 == 1.0
    assert RECIPES["official"][1].warmup_steps(1000) == 100 and RECIPES["official"][1].warmup_steps(50) == 10
    with pytest.raises(ValueError, match="unknown recipe"):
        recipe_of(StageConfig(recipe="fast"))


def render(pieces) -> list[str]:
    """The tokenizer calls of an example; a slot as <Img>[feat]</Img>, a run as [RUN]."""
    return [p.text if isinstance(p, data.Text) else "<Img>[feat]</Img>" if isinstance(p, data.Slot) else "[RUN]"
            for p in pieces]


def test_official_stage_examples_are_the_official_templates():
    pair = {"modality": "image", "path": "bird.jpg", "caption": "a bird on a branch"}
    assert render(data.official_stage1_example(pair)) == [
        "### Human:", "<Img>[feat]</Img>", "generate a caption\n### Assistant:", "a bird on a branch\n###"]
    assert render(data.official_stage2_example(pair)) == [
        "### Human: ", "a bird on a branch\n### Assistant:", "a bird on a branch", "[RUN]", "\n###"]


def test_official_stage3_examples_cut_turns_as_the_official_prompt_does(tmp_path):
    dialogue = {
        "image_list": [{"image_name": "a.png", "caption": "a red circle"},
                       {"image_name": "b.png", "caption": "a blue one"}],
        "conversation": [
            {"from": "human", "value": "What is this?", "media": [{"modality": "image", "name": "a.png", "at": 0}]},
            {"from": "gpt", "value": "A red circle."},
            {"from": "human", "value": "Make it blue."},
            {"from": "gpt", "value": "Here it is.", "media": [{"modality": "image", "name": "b.png", "at": 11}]},
        ],
    }
    first, second = data.stage3_examples(dialogue, tmp_path, "official")
    assert render(first) == ["### Human:", "<Img>[feat]</Img>", "What is this?\n### Assistant:", "A red circle.\n###"]
    assert render(second)[3:] == ["A red circle.\n###", "Human: Make it blue.\n### Assistant:", "Here it is.", "[RUN]",
                                  "\n###"]
    assert [p.target for p in second if isinstance(p, data.Text)] == [False, False, False, False, True, True]
    joined = data.stage3_examples(dialogue, tmp_path)[1]
    assert render(joined)[:3] == ["### Human: ", "<Img>[feat]</Img>",
                                  " What is this?\n### Assistant: A red circle.\n### Human: Make it blue.\n### Assistant:"]


def test_stage1_examples_follow_the_recipe(tmp_path):
    from nextgpt.nano import world
    from nextgpt.train.stages import build_examples

    world.generate(tmp_path, seed=0, n_images=4, n_videos=2, n_audios=2, n_dialogues=2)
    official, _ = build_examples(StageConfig(stage=1, data=str(tmp_path), recipe="official"))
    nano, _ = build_examples(StageConfig(stage=1, data=str(tmp_path), recipe="nano"))
    assert {render(ex)[2] for ex in official} == {"generate a caption\n### Assistant:"}
    assert len({render(ex)[2] for ex in nano}) > 1
