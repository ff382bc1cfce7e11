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
        "zh": "验证在您的浏览器中进行：重新计算哈希与默克尔包含证明，直接从区块链读取检查点与"
        "托管记录，并核对销毁证书的签名。",
        "en": "Verification runs in your browser: it recomputes the hashes and the Merkle "
        "inclusion proof, reads the checkpoint and the custody record from the chain itself, "
        "and checks the destruction certificate's signature.",
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


CONSOLE_TEXT: Final[dict[str, dict[Lang, str]]] = {
    "console": {"zh": "档案管理控制台", "en": "Archivist console"},
    "sign_in": {"zh": "登录", "en": "Sign in"},
    "sign_out": {"zh": "退出", "en": "Sign out"},
    "api_key": {"zh": "API 密钥", "en": "API key"},
    "bad_key": {"zh": "密钥无效或已撤销。", "en": "The key is not valid or was revoked."},
    "catalogue": {"zh": "档案目录", "en": "Catalogue"},
    "dashboard": {"zh": "统计看板", "en": "Dashboard"},
    "search": {"zh": "检索", "en": "Search"},
    "search_label": {"zh": "关键词（标题、元数据）", "en": "Keywords (title, metadata)"},
    "results": {"zh": "条结果", "en": "results"},
    "title": {"zh": "题名", "en": "Title"},
    "department": {"zh": "科室", "en": "Department"},
    "versions": {"zh": "版本", "en": "Versions"},
    "events": {"zh": "事件时间线", "en": "Event timeline"},
    "type": {"zh": "事件", "en": "Event"},
    "time": {"zh": "时间", "en": "Time"},
    "anchoring": {"zh": "上链状态", "en": "Anchoring"},
    "anchored": {"zh": "已上链", "en": "anchored"},
    "pending": {"zh": "待上链", "en": "pending"},
    "proof": {"zh": "证明", "en": "Proof"},
    "download_proof": {"zh": "下载证明文件", "en": "Download proof bundle"},
    "public_page": {"zh": "公开验证页", "en": "Public verification page"},
    "tags": {"zh": "智能标签", "en": "Smart tags"},
    "last_seen": {"zh": "最后位置", "en": "Last seen"},
    "actions": {"zh": "生命周期操作", "en": "Lifecycle actions"},
    "do_archive": {"zh": "归档", "en": "Archive"},
    "do_hold": {"zh": "设置法律保全", "en": "Place legal hold"},
    "do_release": {"zh": "解除法律保全", "en": "Release legal hold"},
    "do_share": {"zh": "共享给医院", "en": "Share with a hospital"},
    "reason": {"zh": "原因（只保存在本节点）", "en": "Reason (kept on this node only)"},
    "confirm": {"zh": "我确认执行此操作", "en": "I confirm this action"},
    "confirm_needed": {"zh": "请勾选确认后再执行。", "en": "Tick the confirmation first."},
    "unknown_action": {"zh": "未知操作。", "en": "Unknown action."},
    "done": {"zh": "已完成：", "en": "Done:"},
    "refused": {"zh": "已拒绝", "en": "Refused"},
    "grantee": {"zh": "接收医院地址", "en": "Grantee hospital address"},
    "purpose": {"zh": "用途", "en": "Purpose"},
    "days": {"zh": "有效天数", "en": "Days valid"},
    "alerts": {"zh": "告警", "en": "Alerts"},
    "retention_due": {"zh": "即将到期（一年内）", "en": "Retention due (within a year)"},
    "deadline": {"zh": "保管期限", "en": "Deadline"},
    "charts": {"zh": "图表（近 30 天）", "en": "Charts (last 30 days)"},
    "chart_retrieval": {"zh": "调阅响应时间分布", "en": "Retrieval-time distribution"},
    "chart_utilisation": {"zh": "利用率", "en": "Utilisation"},
    "chart_sharing": {"zh": "共享量", "en": "Sharing volume"},
    "chart_ingest": {"zh": "每日归集量", "en": "Ingest per day"},
    "chart_lag": {"zh": "上链延迟", "en": "Anchoring lag"},
    "none": {"zh": "无", "en": "none"},
    "signed_in_as": {"zh": "当前用户", "en": "Signed in as"},
    "upload": {"zh": "上传档案", "en": "Upload a record"},
    "file": {"zh": "文件", "en": "File"},
    "patient_id": {"zh": "患者编号（仅以假名保存）", "en": "Patient id (kept as a pseudonym only)"},
    "sensitivity": {"zh": "密级", "en": "Sensitivity"},
    "uploaded": {"zh": "已上传。", "en": "Uploaded."},
    "amend": {"zh": "上传新版本", "en": "Upload a new version"},
    "amend_help": {
        "zh": "仅在归档前可修改；旧版本保留，新版本成为当前版本。",
        "en": "Only before archiving; earlier versions are kept, the new one becomes current.",
    },
    "do_amend": {"zh": "上传新版本", "en": "Upload version"},
    "amended": {"zh": "已上传新版本。", "en": "New version uploaded."},
    "content": {"zh": "调阅内容", "en": "Read the content"},
    "content_help": {
        "zh": "每次调阅都以其用途记入日志（ACCESS 事件）；文件作为附件下载。",
        "en": "Each read is logged with its purpose (ACCESS event); the file downloads.",
    },
    "version_or_current": {"zh": "版本号（留空：当前版本）", "en": "Version (empty: current)"},
    "do_read": {"zh": "下载内容", "en": "Download the content"},
    "upload_error": {"zh": "无法上传，请检查：", "en": "Not uploaded; check:"},
    "open_alerts": {"zh": "未处理告警", "en": "Open alerts"},
    "acknowledged": {"zh": "已确认告警", "en": "Acknowledged alerts"},
    "severity": {"zh": "级别", "en": "Severity"},
    "subject": {"zh": "对象", "en": "Subject"},
    "count": {"zh": "次数", "en": "Count"},
    "last_time": {"zh": "最近时间", "en": "Last seen"},
    "do_ack": {"zh": "确认告警", "en": "Acknowledge"},
    "ack_by": {"zh": "确认人", "en": "Acknowledged by"},
    "retention": {"zh": "保管期限与处置", "en": "Retention and disposition"},
    "start_review": {"zh": "将到期档案转入处置审查", "en": "Move due archives into review"},
    "propose": {"zh": "提交处置清单（销毁建议）", "en": "Propose a disposition list"},
    "select": {"zh": "选择", "en": "Select"},
    "proposals": {"zh": "待审批的处置清单", "en": "Disposition lists awaiting a decision"},
    "proposed_by": {"zh": "提交人", "en": "Proposed by"},
    "decision": {"zh": "决定", "en": "Decision"},
    "approve": {"zh": "批准销毁", "en": "Approve destruction"},
    "reject": {"zh": "驳回并延长保管", "en": "Reject and keep"},
    "keep_until": {
        "zh": "驳回时保管至（YYYY-MM-DD）",
        "en": "If rejected, keep until (YYYY-MM-DD)",
    },
    "do_decide": {"zh": "提交决定", "en": "Submit decision"},
    "four_eyes": {
        "zh": "双人原则：清单提交人不能审批自己的清单。",
        "en": "Four eyes: whoever proposed a list cannot decide on it.",
    },
    "transfers": {"zh": "档案移交", "en": "Transfers"},
    "outgoing": {"zh": "移出（本院发起）", "en": "Outgoing (offered by this hospital)"},
    "incoming": {"zh": "移入（待接收及已处理）", "en": "Incoming (pending and processed)"},
    "incoming_note": {
        "zh": "移入的档案由本节点自动校验后接收或拒绝，无需人工操作。",
        "en": "Incoming offers are checked and accepted or refused by this node on its own.",
    },
    "peer": {"zh": "对方医院", "en": "Peer hospital"},
    "expires": {"zh": "失效时间", "en": "Expires"},
    "offer": {"zh": "发起移交", "en": "Offer custody"},
    "recipient": {"zh": "接收医院地址或名称", "en": "Recipient hospital (address or name)"},
    "do_offer": {"zh": "移交", "en": "Offer"},
    "do_cancel": {"zh": "撤回移交", "en": "Withdraw offer"},
    "manage_tags": {"zh": "标签管理", "en": "Manage tags"},
    "bind_qr": {"zh": "绑定二维码标签", "en": "Bind the QR label"},
    "bind_rfid": {"zh": "绑定 RFID 标签", "en": "Bind an RFID tag"},
    "asset_reference": {"zh": "资产编号（GIAI）", "en": "Asset reference (GIAI)"},
    "kind": {"zh": "类型", "en": "Kind"},
    "label": {"zh": "标签内容", "en": "Label"},
    "scans": {"zh": "扫描次数", "en": "Scans"},
    "print_label": {"zh": "打印标签", "en": "Print label"},
    "print": {"zh": "打印", "en": "Print"},
    "revoked": {"zh": "已作废", "en": "revoked"},
    "back": {"zh": "返回档案", "en": "Back to the archive"},
    "forbidden": {"zh": "无权访问", "en": "Not allowed"},
    "forbidden_note": {
        "zh": "您的角色不能使用此页面或执行此操作。",
        "en": "Your role may not use this page or do this.",
    },
    "not_found": {"zh": "未找到", "en": "Not found"},
    "error": {"zh": "无法完成", "en": "Could not be done"},
    "error_code": {"zh": "错误代码", "en": "Error code"},
    "destruction": {"zh": "待执行的销毁", "en": "Approved destructions to execute"},
    "destruction_note": {
        "zh": "销毁不可撤销：密钥的每份副本被销毁，描述性元数据被清除，签署销毁证明并上链。",
        "en": "Destruction cannot be undone: every copy of the key is destroyed, descriptive "
        "metadata is erased, and a signed certificate goes on chain.",
    },
    "approved_by": {"zh": "批准人", "en": "Approved by"},
    "approval_expires": {"zh": "批准失效时间", "en": "Approval expires"},
    "list": {"zh": "清单", "en": "List"},
    "do_destroy": {"zh": "执行销毁", "en": "Destroy"},
    "do_destroy_list": {"zh": "销毁清单中所有已批准档案", "en": "Destroy every approved item"},
    "certificate": {"zh": "销毁证明", "en": "Destruction certificate"},
    "certificate_hash": {
        "zh": "证明哈希（SHA-256，已上链）",
        "en": "Certificate hash (SHA-256, on chain)",
    },
    "signer": {"zh": "签署医院", "en": "Signed by"},
    "signature": {"zh": "签名", "en": "Signature"},
    "document": {"zh": "证明文件", "en": "Document"},
    "download_certificate": {"zh": "下载销毁证明", "en": "Download the certificate"},
    "extend": {"zh": "延长保管期限", "en": "Extend retention"},
    "extend_note": {
        "zh": "保管期限只能延长，不能缩短。",
        "en": "Retention can be extended, never shortened.",
    },
    "new_deadline": {"zh": "新的保管期限（YYYY-MM-DD）", "en": "New deadline (YYYY-MM-DD)"},
    "no_deadline": {"zh": "尚未归档，无保管期限", "en": "not archived: no deadline yet"},
    "do_revoke_tag": {"zh": "作废标签", "en": "Revoke tag"},
    "manual_scan": {"zh": "手工登记扫描", "en": "Enter a scan by hand"},
    "reader": {"zh": "读写器编号", "en": "Reader id"},
    "location": {"zh": "位置", "en": "Location"},
    "scan_time": {"zh": "扫描时间（UTC）", "en": "Scan time (UTC)"},
    "do_scan": {"zh": "登记扫描", "en": "Record scan"},
    "label_sheet": {"zh": "标签打印单（PDF）", "en": "Label sheet (PDF)"},
    "label_ids": {"zh": "档案编号（每行一个）", "en": "Archive ids (one a line)"},
    "do_label_sheet": {"zh": "生成 PDF", "en": "Make the PDF"},
    "member_sign_in": {
        "zh": "联盟成员登录（EIP-4361）",
        "en": "Consortium member sign-in (EIP-4361)",
    },
    "member_address": {"zh": "成员地址（0x…）", "en": "Member address (0x…)"},
    "member_role": {"zh": "角色", "en": "Role"},
    "get_message": {"zh": "获取待签名消息", "en": "Get the message to sign"},
    "message": {"zh": "待签名消息", "en": "Message to sign"},
    "sign_note": {
        "zh": "请用成员私钥按 EIP-191（personal_sign）签署以下消息，例如钱包，或 "
        "archivechain sign-message --keystore 文件，然后粘贴签名。",
        "en": "Sign this message with the member key (EIP-191 personal_sign), in a wallet or "
        "with archivechain sign-message --keystore FILE, then paste the signature.",
    },
    "signature_hex": {"zh": "签名（0x…，65 字节）", "en": "Signature (0x…, 65 bytes)"},
    "do_verify_sign_in": {"zh": "验证并登录", "en": "Verify and sign in"},
    "member_refused": {"zh": "登录被拒绝", "en": "Sign-in refused"},
    "staff_sign_in": {"zh": "员工 API 密钥登录", "en": "Staff sign-in with an API key"},
    "member": {"zh": "联盟成员", "en": "Consortium member"},
    "token_expires": {"zh": "会话令牌失效时间", "en": "Token expires"},
    "holds": {"zh": "法律保全", "en": "Legal holds"},
    "by_regulator": {"zh": "监管机构保全", "en": "Regulator hold"},
    "placed_by": {"zh": "设置人", "en": "Placed by"},
    "audit": {"zh": "访问审计", "en": "Access audit"},
    "actor": {"zh": "访问者", "en": "Actor"},
    "scope": {"zh": "范围", "en": "Scope"},
    "break_glass": {"zh": "紧急访问", "en": "Break-glass"},
    "do_query": {"zh": "查询", "en": "Query"},
    "member_home": {"zh": "成员主页", "en": "Member home"},
}


def console_words(lang: Lang) -> dict[str, str]:
    """Every console word in ``lang``."""
    return {key: value[lang] for key, value in CONSOLE_TEXT.items()}


def pick(lang: str | None) -> Lang:
    """The language asked for, Chinese unless English is asked for."""
    return "en" if lang == "en" else "zh"


def words(lang: Lang) -> dict[str, str]:
    """Every page word in ``lang``."""
    return {key: value[lang] for key, value in TEXT.items()}


def script_words(lang: Lang) -> dict[str, str]:
    """The words the verifier script shows, in ``lang``."""
    return {key: value[lang] for key, value in SCRIPT_TEXT.items()}
