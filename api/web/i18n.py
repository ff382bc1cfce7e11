"""The pages' words in Chinese (default) and English; ``?lang=en`` switches."""

from __future__ import annotations

from typing import Final, Literal

Lang = Literal["zh", "en"]
LANGS: Final[tuple[Lang, ...]] = ("zh", "en")

TEXT: Final[dict[str, dict[Lang, str]]] = {
    "public_title": {"zh": "档案存证公开验证", "en": "Public archive verification"},
    "archive": {"zh": "档案编号", "en": "Archive id"},
    "exists": {"zh": "存在", "en": "Exists"},
    "yes": {"zh": "是", "en": "yes"},
    "record_class": {"zh": "档案类别", "en": "Record class"},
    "custodian": {"zh": "保管医院", "en": "Custodian hospital"},
    "state": {"zh": "状态", "en": "State"},
    "on_hold": {"zh": "法律保全", "en": "Legal hold"},
    "no": {"zh": "否", "en": "no"},
    "created": {"zh": "创建时间", "en": "Created"},
    "archived": {"zh": "归档时间", "en": "Archived"},
    "anchored": {"zh": "上链时间", "en": "Anchored"},
    "checkpoint": {"zh": "链上检查点", "en": "On-chain checkpoint"},
    "not_anchored": {"zh": "尚未上链", "en": "not anchored yet"},
    "commitment": {"zh": "内容承诺前缀", "en": "Commitment prefix"},
    "label_ok": {"zh": "与标签一致", "en": "matches the label"},
    "label_bad": {"zh": "与标签不一致！", "en": "does NOT match the label!"},
    "certificate": {"zh": "销毁证明", "en": "Destruction certificate"},
    "chain": {"zh": "区块链", "en": "Chain"},
    "notary": {"zh": "存证合约", "en": "Notary contract"},
    "verify_here": {"zh": "在本浏览器中验证", "en": "Verify in this browser"},
    "verify_file": {"zh": "验证证明文件", "en": "Verify a proof bundle file"},
    "verify_note": {
        "zh": "验证在您的浏览器中进行：重新计算哈希与默克尔包含证明，并直接从区块链读取检查点。",
        "en": "Verification runs in your browser: it recomputes the hashes and the Merkle "
        "inclusion proof and reads the checkpoint from the chain itself.",
    },
    "privacy": {
        "zh": "本页不显示任何患者信息或档案内容。",
        "en": "This page shows no patient data and no content.",
    },
    "not_found": {"zh": "未找到该档案", "en": "No such archive"},
    "language": {"zh": "English", "en": "中文"},
    "steps": {"zh": "验证步骤", "en": "Verification steps"},
}

SCRIPT_TEXT: Final[dict[str, dict[Lang, str]]] = {
    "VALID": {"zh": "有效 VALID", "en": "VALID"},
    "INVALID": {"zh": "无效 INVALID", "en": "INVALID"},
    "UNUSABLE": {"zh": "无法使用的输入", "en": "UNUSABLE input"},
    "CHAIN_UNAVAILABLE": {"zh": "区块链不可用", "en": "CHAIN UNAVAILABLE"},
    "running": {"zh": "验证中…", "en": "Verifying…"},
    "document": {"zh": "文件", "en": "Document"},
    "entries": {"zh": "条事件", "en": "entries"},
}


def pick(lang: str | None) -> Lang:
    """The language asked for, Chinese unless English is asked for."""
    return "en" if lang == "en" else "zh"


def words(lang: Lang) -> dict[str, str]:
    """Every page word in ``lang``."""
    return {key: value[lang] for key, value in TEXT.items()}


def script_words(lang: Lang) -> dict[str, str]:
    """The words the verifier script shows, in ``lang``."""
    return {key: value[lang] for key, value in SCRIPT_TEXT.items()}
