"""POPE and ScienceQA-IMG: their metrics against hand-computed cases (LLaVA's eval_pope.py and
eval_science_qa.py rules), the readers of the files users download (on generated stand-ins written in those
layouts), and ``--task pope|scienceqa`` end to end on the tiny VLM."""
import json

import pandas as pd
import pytest

from simclip_bench.data.vlm_benchmarks import pope_dataset, scienceqa_dataset
from simclip_bench.data.vlm_standins import shapes_pope, shapes_scienceqa, write_pope_files, write_scienceqa_files
from simclip_bench.errors import UserError
from simclip_bench.metrics.pope import pope_answer, pope_counts, pope_metrics
from simclip_bench.metrics.scienceqa import choice_correct, parse_choice

LABELS = ["yes", "yes", "yes", "no", "no", "no", "no", "yes"]


def test_an_answer_is_no_when_its_first_sentence_says_no_or_not():
    assert pope_answer("No") == "no" and pope_answer("no, there is none.") == "no"
    assert pope_answer("There is not a dog.") == "no"
    assert pope_answer("Yes. No doubt.") == "yes"  # only the first sentence counts
    assert pope_answer("NO") == "yes" and pope_answer("Nope") == "yes" and pope_answer("") == "yes"
    assert pope_answer("Yes, no") == "no"  # commas removed, then words: "Yes no"


def test_pope_metrics_by_hand():
    answers = ["Yes", "yes", "No", "Yes.", "Yes", "No", "no", "yes"]  # TP 0, 1, 7; FN 2; FP 3, 4; TN 5, 6
    counts = pope_counts(answers, LABELS)
    assert (counts.tp, counts.fp, counts.tn, counts.fn) == (3, 2, 2, 1)
    m = pope_metrics(answers, LABELS)
    assert m["accuracy"] == pytest.approx(5 / 8) and m["precision"] == pytest.approx(3 / 5)
    assert m["recall"] == pytest.approx(3 / 4) and m["f1"] == pytest.approx(2 * 0.6 * 0.75 / 1.35)
    assert m["yes_ratio"] == pytest.approx(5 / 8)  # answers read as yes, not labels


def test_all_yes_and_all_no_answer_sets():
    all_yes = pope_metrics(["Yes"] * 8, LABELS)  # 4 labels yes, 4 no
    assert all_yes == pytest.approx({"accuracy": 0.5, "precision": 0.5, "recall": 1.0, "f1": 2 / 3, "yes_ratio": 1.0})
    all_no = pope_metrics(["No"] * 8, LABELS)  # no "yes" answer: precision, recall, F1 0 (the reference divides by 0)
    assert all_no == pytest.approx({"accuracy": 0.5, "precision": 0.0, "recall": 0.0, "f1": 0.0, "yes_ratio": 0.0})


def test_scienceqa_answers_parse_as_eval_science_qa_reads_them():
    assert parse_choice("B") == "B" and parse_choice("C. a dog") == "C"
    assert parse_choice("The answer is D.") == "D" and parse_choice("I think The answer is A!") == "A"
    assert parse_choice("The answer is A. The answer is B.") == "FAILED"  # more than one
    assert parse_choice("b") == "FAILED" and parse_choice("C.") == "FAILED" and parse_choice("") == "FAILED"
    assert choice_correct("B", 2, 1) and not choice_correct("C", 2, 2)  # C is past a 2-option question
    assert not choice_correct("FAILED text", 3, 0)


def test_the_pope_reader_reads_the_files_and_fingerprints_them(tmp_path):
    write_pope_files(tmp_path, 6)
    data = pope_dataset(tmp_path, "adversarial")
    assert data.name == "pope-adversarial" and data.split == "adversarial" and len(data) == 6
    standin = shapes_pope(6, "adversarial")
    assert [s.question for s in data.samples] == [s.question for s in standin.samples]
    assert [s.references for s in data.samples] == [("yes",), ("no",)] * 3
    assert data.source == str(tmp_path.resolve()) and len(data.fingerprint) == 64
    assert data.images(32).shape == (6, 3, 32, 32)
    assert pope_dataset(tmp_path, "random").fingerprint != data.fingerprint
    label_file = tmp_path / "coco" / "coco_pope_adversarial.json"
    label_file.write_text(label_file.read_text().replace('"label": "no"', '"label": "maybe"', 1))
    with pytest.raises(UserError, match="neither 'yes' nor 'no'"):
        pope_dataset(tmp_path, "adversarial")


def test_the_pope_standins_sample_negatives_three_ways():
    def negatives(split):
        return [s.question for s in shapes_pope(40, split).samples[1::2]]

    assert negatives("random") != negatives("popular") != negatives("adversarial")
    positives = [s.question for s in shapes_pope(40, "random").samples[0::2]]
    adversarial = negatives("adversarial")
    assert "is there a ring in the image?" in [adversarial[k] for k, q in enumerate(positives) if "circle" in q]


def test_the_scienceqa_reader_keeps_test_questions_with_images(tmp_path):
    write_scienceqa_files(tmp_path, 6)
    data = scienceqa_dataset(tmp_path)
    standin = shapes_scienceqa(6)
    assert len(data) == 6  # the text-only twins are skipped
    assert [s.question for s in data.samples] == [s.question for s in standin.samples]
    assert [s.choices for s in data.samples] == [s.choices for s in standin.samples]
    assert [s.references for s in data.samples] == [s.references for s in standin.samples]
    assert data.samples[0].question.startswith("Context: N/A\nQuestion: what shape is in the image?\nOptions: (A)")
    before = data.fingerprint
    problems = json.loads((tmp_path / "problems.json").read_text())
    problems["1000"]["answer"] = 9
    (tmp_path / "problems.json").write_text(json.dumps(problems))
    with pytest.raises(UserError, match="is not the index of one of its"):
        scienceqa_dataset(tmp_path)
    problems["1000"]["answer"] = 0
    (tmp_path / "problems.json").write_text(json.dumps(problems))
    assert scienceqa_dataset(tmp_path).fingerprint != before


def test_the_tiny_vlm_answers_multiple_choice_by_naming_an_option():
    from simclip_bench.vlm.load import load_vlm

    vlm = load_vlm("tiny-vlm", "tiny-clip").vlm
    sample = shapes_scienceqa(3).samples[2]
    assert vlm.choice_prompt(sample.question, sample.choices) == "what shape is in the image?"
    letter = sample.references[0]
    assert vlm.choice_target(letter, sample.choices) == sample.choices["ABCDE".index(letter)]
    assert vlm.read_choice(sample.choices[1], sample.choices) == "B"
    assert vlm.read_choice("pink", sample.choices) == "pink"


@pytest.mark.parametrize("task", ["pope", "scienceqa"])
def test_the_task_runs_end_to_end_on_the_tiny_vlm(tmp_path, task):
    from simclip_bench.attacks.eps import parse_eps
    from simclip_bench.jobs.vlm_eval import VLMEvalRequest, run_vlm_eval

    request = VLMEvalRequest(task=task, models=["tiny-clip"], n_samples=4, n_iter=2, eps=[parse_eps("4/255")],
                             out=tmp_path, device="cpu")
    result = run_vlm_eval(request)
    rows = pd.DataFrame(result.rows)
    if task == "pope":
        assert sorted(set(rows["dataset"])) == ["shapes-adversarial", "shapes-popular", "shapes-random"]
        assert set(rows["metric"]) == {"accuracy", "precision", "recall", "f1", "yes_ratio"}
        assert len(rows) == 3 * 2 * 5  # splits x (clean, 4/255) x metrics
        assert rows.groupby("dataset")["data_id"].first().nunique() == 3  # a split is a dataset of its own
        assert rows["setting"].nunique() == 2  # one clean, one attacked setting: the splits average on a leaderboard
    else:
        assert rows["metric"].tolist() == ["accuracy"] * 2
        assert {json.loads(c)["scienceqa_prompt"] for c in rows["attack_config"]} == {"robustvlm"}
    acc = rows[rows["metric"] == "accuracy"].set_index(["dataset", "attack"])["value"]
    for dataset in set(rows["dataset"]):
        assert acc[(dataset, "apgd-ensemble")] <= acc[(dataset, "none")]
    samples = pd.read_csv(tmp_path / "vlm_samples.csv", keep_default_na=False)
    assert (samples["max_perturbation"].astype(float) <= 4 / 255 + 1e-6).all()
