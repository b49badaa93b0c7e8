"""Data files → records → tensors, shared by every method: instruction and preference readers, the prompt a
policy sees, SFT rows (prompt + response labels) and prompt/response pairs (DPO, online DPO, KTO).

Conventions: prompt and response are tokenized separately without special tokens, exactly as `generate` sees
them; a response ends with EOS (EOS is an action, and it teaches when to stop) unless it was cut.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from farm.errors import FarmError
from farm.io import PathLike, get_field, preference_from_record, read_records

IGNORE_INDEX = -100  # labels that carry no loss (prompt and padding)


# ----- data files -----

def read_instructions(path: PathLike, need_output: bool = False) -> list[dict[str, str]]:
    """Records with `instruction`, `input` ('' if absent) and `output` (if present; required when need_output)
    from JSON/JSONL[.gz]. Extra keys (`dataset`, `id`, ...) are kept."""
    out = []
    for i, r in enumerate(read_records(path), 1):
        rec = dict(r)
        rec["instruction"] = get_field(r, "instruction", path, i)
        rec["input"] = get_field(r, "input", path, i, default="")
        if need_output or "output" in r:
            rec["output"] = get_field(r, "output", path, i)
        out.append(rec)
    if not out:
        raise FarmError("no records", file=path)
    return out


def split_dialogue(chosen: str, rejected: str, marker: str = "Assistant:") -> tuple[str, str, str]:
    """(prompt, chosen reply, rejected reply) for two full dialogues sharing a prefix (HH-RLHF style): the
    prompt ends after the last `marker` inside the common prefix.

    >>> split_dialogue("H: hi\\n\\nAssistant: yes", "H: hi\\n\\nAssistant: no")
    ('H: hi\\n\\nAssistant:', ' yes', ' no')
    """
    n = 0
    for a, b in zip(chosen, rejected):
        if a != b:
            break
        n += 1
    k = chosen.rfind(marker, 0, n)
    cut = k + len(marker) if k >= 0 else n
    return chosen[:cut], chosen[cut:], rejected[cut:]


def read_preferences(path: PathLike, soft: bool = False) -> list[dict[str, Any]]:
    """Preference triples {instruction, input, prompt?, chosen, rejected, p_chosen} from
    - our annotation files / AlpacaEval annotations (output_1, output_2 and p_output_2 or `preference`), or
    - chosen/rejected records: with `instruction`/`prompt`, or full dialogues (HH-RLHF) split at the last
      'Assistant:' of their common prefix (then `prompt` holds the dialogue text, used verbatim).
    Invalid preferences are dropped. Hard labels (soft=False): ties dropped, p_chosen = 1. Soft labels:
    p_chosen = max(p, 1 - p) = P(chosen better) and ties are kept (they teach r_chosen ≈ r_rejected)."""
    out: list[dict[str, Any]] = []
    for i, r in enumerate(read_records(path), 1):
        if "chosen" in r and "rejected" in r:
            chosen, rejected = get_field(r, "chosen", path, i), get_field(r, "rejected", path, i)
            rec: dict[str, Any] = {"instruction": get_field(r, "instruction", path, i, default=""),
                                   "input": get_field(r, "input", path, i, default=""), "p_chosen": 1.0}
            if "prompt" in r:
                rec["prompt"] = get_field(r, "prompt", path, i)
            elif not rec["instruction"]:
                rec["prompt"], chosen, rejected = split_dialogue(chosen, rejected)
            out.append({**rec, "chosen": chosen, "rejected": rejected})
            continue
        if "output_1" not in r:
            raise FarmError("not a preference record: need output_1/output_2 with p_output_2 (or AlpacaEval "
                            "'preference'), or chosen/rejected", file=path, line=i, field="output_1")
        p = preference_from_record(r, path, i)
        if p is None or (p == 0.5 and not soft):
            continue
        o1, o2 = get_field(r, "output_1", path, i), get_field(r, "output_2", path, i)
        chosen, rejected = (o2, o1) if p >= 0.5 else (o1, o2)
        out.append({"instruction": get_field(r, "instruction", path, i), "input": get_field(r, "input", path, i,
                    default=""), "chosen": chosen, "rejected": rejected,
                    "p_chosen": max(p, 1 - p) if soft else 1.0})
    if not out:
        raise FarmError("no usable preference pairs (all invalid or ties?)", file=path)
    return out


# ----- records → tensors -----

def prompt_text(rec: dict, tokenizer=None, style: str = "alpaca") -> str:
    """The prompt a policy sees for a record: its verbatim `prompt` if it has one, else the formatted
    instruction/input."""
    from farm.models.generation import format_prompt

    if rec.get("prompt"):
        return rec["prompt"]
    return format_prompt(rec["instruction"], rec.get("input", ""), tokenizer, style)


def sft_rows(tokenizer, records: Sequence[dict], max_len: int = 512, style: str = "alpaca",
             response_key: str = "output") -> list[tuple[list[int], list[int]]]:
    """(prompt ids, response ids + EOS) per record, cut to `max_len` together: the prompt keeps its end (at most
    half of max_len when the response is long), the response keeps its start (and then has no EOS). Prompt and
    response are tokenized separately (no special tokens added), exactly as `generate` sees them."""
    prompts = tokenizer([prompt_text(rec, tokenizer, style) for rec in records], add_special_tokens=False)["input_ids"]
    responses = tokenizer([rec[response_key] for rec in records], add_special_tokens=False)["input_ids"]
    rows = []
    for p, r in zip(prompts, responses):
        r = r + [tokenizer.eos_token_id]
        r_keep = min(len(r), max_len - min(len(p), max_len // 2))
        p = p[len(p) - (max_len - r_keep):] if len(p) + r_keep > max_len else p
        rows.append((p, r[:r_keep]))
    return rows


def pad_sft(rows: Sequence[tuple[list[int], list[int]]], pad_id: int) -> dict[str, Any]:
    """Right-padded `input_ids`, `attention_mask` (B, T) and `labels` (B, T) from `sft_rows`: labels are the
    response tokens (EOS included: it teaches when to stop) and IGNORE_INDEX on prompt and padding."""
    import torch

    T = max(len(p) + len(r) for p, r in rows)
    ids = torch.full((len(rows), T), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), T), dtype=torch.long)
    labels = torch.full((len(rows), T), IGNORE_INDEX, dtype=torch.long)
    for i, (p, r) in enumerate(rows):
        n = len(p) + len(r)
        ids[i, :n] = torch.tensor(p + r)
        mask[i, :n] = 1
        labels[i, len(p):n] = torch.tensor(r)
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def tokenize_sft(tokenizer, records: Sequence[dict], max_len: int = 512, style: str = "alpaca",
                 response_key: str = "output") -> dict[str, Any]:
    """`pad_sft(sft_rows(...))`: a padded SFT batch from records (see both)."""
    return pad_sft(sft_rows(tokenizer, records, max_len, style, response_key), tokenizer.pad_token_id)


# ----- prompt/response pairs → tensors (DPO, online DPO, KTO) -----

def tokenize_pairs(tokenizer, examples: Sequence[dict], max_prompt_tokens: int = 192, max_response_tokens: int = 64,
                   keys: tuple[str, str] = ("chosen", "rejected")) -> list[dict]:
    """Add `tokens` = (prompt ids, first response ids + EOS, second response ids + EOS) to each example {prompt,
    <keys[0]>, <keys[1]>}, once (not every step). Prompts keep their end, responses their start (then no EOS)."""
    def ids(texts: list[str]) -> list[list[int]]:
        return tokenizer(texts, add_special_tokens=False)["input_ids"]

    eos = tokenizer.eos_token_id
    prompts, first, second = (ids([e[k] for e in examples]) for k in ("prompt", *keys))
    return [{**e, "tokens": (p[-max_prompt_tokens:], (a + [eos])[:max_response_tokens],
                             (b + [eos])[:max_response_tokens])}
            for e, p, a, b in zip(examples, prompts, first, second)]


def pad_rows(rows: list[list[int]], pad_id: int, left: bool):
    """Lists of ids → (ids, mask), each (N, longest), padded on the left or the right."""
    import torch

    T = max(len(r) for r in rows)
    ids = torch.full((len(rows), T), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), T), dtype=torch.long)
    for i, r in enumerate(rows):
        sl = slice(T - len(r), T) if left else slice(0, len(r))
        ids[i, sl] = torch.tensor(r, dtype=torch.long)
        mask[i, sl] = 1
    return ids, mask


def collate_pairs(tokenizer, examples: Sequence[dict], max_prompt_tokens: int = 192, max_response_tokens: int = 64,
                  keys: tuple[str, str] = ("chosen", "rejected")) -> dict[str, Any]:
    """Examples {prompt, chosen, rejected[, tokens][, ref]} → 2B rows, first responses then second ones:
    prompt_ids/mask (2B, P) left-padded, response_ids/mask (2B, R) right-padded, and `ref` (B, 2) when the
    examples carry it. Untokenized examples are tokenized here with the given limits."""
    import torch

    if "tokens" not in examples[0]:
        examples = tokenize_pairs(tokenizer, examples, max_prompt_tokens, max_response_tokens, keys)
    p, a, b = zip(*(e["tokens"] for e in examples))
    batch = collate_rows(tokenizer, list(p) * 2, list(a) + list(b))
    if "ref" in examples[0]:
        batch["ref"] = torch.tensor([e["ref"] for e in examples], dtype=torch.float32)
    return batch


def collate_rows(tokenizer, prompts: list[list[int]], responses: list[list[int]]) -> dict[str, Any]:
    """Token lists → prompt_ids/mask (N, P) left-padded and response_ids/mask (N, R) right-padded."""
    p_ids, p_mask = pad_rows(prompts, tokenizer.pad_token_id, left=True)
    r_ids, r_mask = pad_rows(responses, tokenizer.pad_token_id, left=False)
    return {"prompt_ids": p_ids, "prompt_mask": p_mask, "response_ids": r_ids, "response_mask": r_mask}
