# lm-evaluation-harness task helpers for the parity check (bench/parity/lmeval.ts): they load the local copies of the
# sets in ../shared/data (docs/DATA.md) into the field layout of the Hugging Face datasets lm_eval's own task YAMLs read, so
# those YAMLs' doc_to_text / doc_to_choice / doc_to_target templates apply unchanged and no hub is reached.
# lmeval.ts copies this file as utils.py beside the generated YAMLs; each `custom_dataset: !function utils.load_x`
# gets `path` (and `limit`) from the YAML's dataset_kwargs.
import bz2
import csv
import json
import os
import re

import datasets


def _split(rows, limit):
    # Only the first `limit` docs are scored (lm_eval's --limit takes the first ones too); reading no more keeps
    # HellaSwag's process_docs from mapping all 10,042.
    return datasets.DatasetDict({"test": datasets.Dataset.from_list(rows[:limit] if limit else rows)})


def _mc(instruction, answer):
    """LLM-Adapters layout: question, then `Answer1: ..` / `Option1: ..` choices, then `Answer format: ..`."""
    body = re.sub(r"\n*Answer format:[\s\S]*$", "", instruction)
    first = re.search(r"(Answer|Option)\d+:", body)
    question = body[: first.start()]
    question = re.sub(r"^Please choose the correct answer (to the question|to fill in the blank to complete the given sentence): ", "", question).strip()
    choices = [c.strip() for c in re.split(r"(?:Answer|Option)\d+:\s*", body[first.start():])[1:]]
    gold = int(re.search(r"(\d+)$", answer).group(1)) - 1
    return question, choices, gold


def _letters(n):
    return [chr(ord("A") + i) for i in range(n)]


def _lettered(path, limit, question_key):
    """ARC's and OpenBookQA's layout: lettered choices and answerKey; only the question's field name differs."""
    rows = []
    for r in json.load(open(path, encoding="utf-8")):
        q, ch, g = _mc(r["instruction"], r["answer"])
        rows.append({question_key: q, "choices": {"text": ch, "label": _letters(len(ch))}, "answerKey": _letters(len(ch))[g]})
    return _split(rows, limit)


def load_arc(path, limit=None, **_):
    return _lettered(path, limit, "question")


def load_openbookqa(path, limit=None, **_):
    return _lettered(path, limit, "question_stem")


def load_winogrande(path, limit=None, **_):
    rows = []
    for r in json.load(open(path, encoding="utf-8")):
        q, ch, g = _mc(r["instruction"], r["answer"])
        rows.append({"sentence": q, "option1": ch[0], "option2": ch[1], "answer": str(g + 1)})
    return _split(rows, limit)


def load_boolq(path, limit=None, **_):
    # The shared copy has no passage, and LLM-Adapters ended each question with the '?' that lm_eval's template adds.
    rows = []
    for r in json.load(open(path, encoding="utf-8")):
        q = re.sub(r"^Please answer the following question with true or false, question: ", "", r["instruction"])
        q = re.sub(r"\n*Answer format:[\s\S]*$", "", q).strip()
        q = q[:-1] if q.endswith("?") else q
        rows.append({"question": q, "label": 1 if r["answer"].strip() == "true" else 0})
    return _split(rows, limit)


def load_piqa(path, limit=None, **_):
    labels = open(os.path.join(os.path.dirname(path), "valid-labels.lst"), encoding="utf-8").read().split()
    rows = [dict(json.loads(line), label=int(labels[i])) for i, line in enumerate(open(path, encoding="utf-8").read().strip().splitlines())]
    return _split(rows, limit)


def _hellaswag_ctx(ctx):
    """The text file joins ctx_a and ctx_b; ctx_b (lm_eval capitalises it) is taken to be the unfinished fragment
    after the last '. ', when there is one."""
    i = ctx.rfind(". ")
    tail = ctx[i + 2:] if i >= 0 else ""
    if tail and not tail.rstrip().endswith((".", "!", "?", '"')):
        return ctx[: i + 1], tail
    return ctx, ""


def load_hellaswag(path, limit=None, **_):
    lines = bz2.open(path, "rt", encoding="utf-8").read().split("\n")
    rows = []
    for i in range(0, len(lines) - 5, 6):
        label, ctx = lines[i].split(": ", 1)
        ctx_a, ctx_b = _hellaswag_ctx(ctx)
        rows.append({"activity_label": label, "ctx_a": ctx_a, "ctx_b": ctx_b, "endings": lines[i + 2 : i + 6], "label": lines[i + 1]})
    return _split(rows, limit)


def load_mmlu(path, limit=None, **_):
    rows = []
    for f in sorted(os.listdir(path)):
        if not f.endswith(".csv"):
            continue
        subject = f[: -len("_dev.csv")]
        for r in csv.DictReader(open(os.path.join(path, f), encoding="utf-8", newline="")):
            rows.append({"question": r["question"], "subject": subject, "subject_words": subject.replace("_", " "),
                         "choices": [r[f"choice{i}"] for i in range(4)], "answer": int(r["answer"])})
    return _split(rows, limit)


def hellaswag_process_docs(dataset):
    # lm_eval's own HellaSwag preprocessing, imported rather than restated.
    from lm_eval.tasks.hellaswag.utils import process_docs
    return process_docs(dataset)


# lm_eval's own WinoGrande functions (partial scoring: one context per option, the rest of the sentence scored).
def winogrande_doc_to_text(doc):
    from lm_eval.tasks.winogrande.preprocess_winogrande import doc_to_text
    return doc_to_text(doc)


def winogrande_doc_to_target(doc):
    from lm_eval.tasks.winogrande.preprocess_winogrande import doc_to_target
    return doc_to_target(doc)


def winogrande_doc_to_choice(doc):
    from lm_eval.tasks.winogrande.preprocess_winogrande import doc_to_choice
    return doc_to_choice(doc)
