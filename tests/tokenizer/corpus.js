// The tokenizer corpus: texts on which our ids must equal Hugging Face's, in both modes.
// Used by prepare.js (tests) and bench/tokenizer/hf_bench.js (benchmark). Deterministic.
"use strict";

const fixed = {
  english_tech:
    "Multi-head Latent Attention (MLA) compresses the key-value cache into a 512-dim latent vector " +
    "per token, plus a 64-dim decoupled RoPE key. During decoding we absorb W_UK into the query " +
    "projection, so attention runs directly against the latent cache; the FLOPs per token grow by " +
    "~2.3x while HBM traffic drops 8-fold. DeepSeekMoE routes each token to 8 of 256 experts " +
    "(top-k=8, n_group=8, topk_group=4); the shared expert always fires. We didn't observe load " +
    "imbalance > 5% after the bias update (γ = 0.001). See https://arxiv.org/abs/2412.19437 §2.1, " +
    "e.g. Fig. 3 & Table 4 — it's all in the paper's appendix (pp. 45–52).\n",
  chinese_tech:
    "多头潜在注意力（MLA）将键值缓存压缩为每个词元一个512维的潜在向量。在解码阶段，我们把W_UK吸收进查询投影，" +
    "注意力直接作用于潜在缓存；每个词元的计算量增加约2.3倍，而显存带宽占用下降8倍。DeepSeekMoE为每个词元从256个专家中" +
    "选择8个，共享专家始终激活。详见论文第2.1节：“负载均衡”与“多词元预测（MTP）”。\n",
  japanese:
    "東京は日本の首都です。カタカナとひらがな、そして漢字が混ざった文章：「ディープシーク・ブイスリーは、" +
    "巨大な言語モデルです。」ﾊﾝｶｸｶﾀｶﾅもあります。ヴァイオリンを弾きましょう〜！",
  korean: "안녕하세요, 세계! 딥시크 모델은 한국어도 잘 처리합니다. 자모 분리: ᄒ" + "\u1161" + "\u11AB 그리고 ㄱㄴㄷ.",
  russian: "Съешь же ещё этих мягких французских булок, да выпей чаю. Ёжик в тумане — 1975 г.",
  arabic: "مرحبا بالعالم! هذه جملة عربية مع تشكيل: بِسْمِ اللَّهِ الرَّحْمَٰنِ الرَّحِيمِ ٠١٢٣٤٥٦٧٨٩.",
  hindi: "नमस्ते दुनिया! हिन्दी में संयुक्ताक्षर: क्षत्रिय, ज्ञान, श्री। अंक: १२३४५६७८९०।",
  thai_hebrew_greek: "สวัสดีครับ ภาษาไทยไม่มีช่องว่าง שלום עולם! Καλημέρα κόσμε, ΑΒΓΔ αβγδ ς.",
  vietnamese: "Tiếng Việt có dấu: Trường Sơn, Nguyễn, ở đâu? Tiê\u0301ng (combining).",
  emoji:
    "Family 👨‍👩‍👧‍👦, couple 👩‍❤️‍💋‍👨, coder 👩🏽‍💻, skin tones 👋🏻👋🏼👋🏽👋🏾👋🏿, flags 🇯🇵🇺🇸🇪🇺🏴‍☠️🏳️‍🌈, " +
    "keycaps 1️⃣#️⃣, hearts ❤️🧡💛, text ☺︎ vs emoji ☺️ 🫠🫶.",
  combining_zero_width:
    "e\u0301 vs \u00e9; Z\u0324\u0354\u0367\u0311\u0313a\u0308\u0356\u032d\u0308\u0307l\u036e\u0312\u036bg" +
    "\u030c\u0317\u035a o\u0319\u0314\u036e; zero\u200bwidth\u200cnon\u200djoiner\u2060word\ufeffBOM; " +
    "nbsp\u00a0here, ideographic\u3000space, en\u2002em\u2003thin\u2009, line\u2028sep\u2029para, " +
    "nel\u0085x, vt\u000bff\u000cx, ctl\u0001\u007f\u001fx, soft\u00adhyphen, \u0300lead mark, rtl\u200fmark.",
  numbers_dates:
    "2024-01-31T12:34:56.789Z, 31/01/2024, Jan 31st 2024, 3.14159265358979, 1,234,567.89, -0.5e-10, " +
    "0xDEADBEEF, 1234567890123, ¹²³ ½ ¾ Ⅻ ⅷ ①②③ ٣٤٥ १२३ ௧௨ 𝟙𝟚𝟛, v1.2.3-rc.4, $99.99, 50%, 10:30pm.",
  code_tabs_crlf:
    "#include <stdio.h>\r\n\r\nint main(int argc, char** argv) {\r\n\tfor (int i = 0; i < argc; ++i) {\r\n" +
    "\t\tprintf(\"%d: %s\\n\", i, argv[i]);\r\n\t}\r\n\treturn 0;\r\n}\r\n" +
    "def f(x):\n    if x <= 0:\n        return []  # base case\n    return [x] + f(x - 1)\n\n" +
    "const re = /^[a-z_]\\w*$/i; let s = `${a}+${b}`; obj?.x ?? y; a->b; x::y; a!=b && c>=d || !e;\n" +
    "{\"key\": [1, 2.5, null, true], \"nested\": {\"k\": \"v\"}}\n<div class=\"x\">&nbsp;</div>",
  whitespace_runs:
    "a  b   c    d\n\n\ne \n \n f\t\tg \t \t h\r\n\r\n   \n x   \n\n  y\r\rz \u00a0 w   \t",
  spaces_only: "     ",
  newlines_only: "\n\n\n",
  mixed_space_newline: " \n \n\t\r\n  ",
  one_letter_4k: "a".repeat(4096),
  empty: "",
  lone_space: " ",
  lone_newline: "\n",
  control_token_imitations:
    "<｜begin▁of▁sentence｜>You are helpful.<｜User｜>Hi<｜Assistant｜><think>\nhmm</think>Hello<｜end▁of▁sentence｜>" +
    "<|EOT|><｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function<｜tool▁sep｜>get\n```json\n{}\n```<｜tool▁call▁end｜>" +
    "<｜tool▁calls▁end｜><｜tool▁outputs▁begin｜><｜tool▁output▁begin｜>x<｜tool▁output▁end｜><｜tool▁outputs▁end｜>" +
    "<｜User <｜User|> <|User|> <｜User｜<｜User｜>> <｜place▁holder▁no▁798｜><｜▁pad▁｜><｜fim▁hole｜>",
  punctuation:
    "Hello, world! How's it going?? (Fine...) [ok] {yes} <no> 'quoted' \"double\" «guillemets» „low“ " +
    "…ellipsis — em-dash – en-dash ¿qué? ¡sí! #hashtag @mention e.g. i.e. U.S.A. a/b\\c |pipe| ~tilde^ " +
    "don't I'll we're they've she'd, ... !!! ??? ;;; ::: ** __init__ ->> <<= ===",
  mixed_scripts: "Hello世界123abc，中文English混合テキスト한국어Русский123中文456ABC。x²+y²=z²",
};

// Seeded random strings over characters that stress the Split rules' edges.
function randomStrings(count, seed) {
  let s = seed >>> 0;
  const next = () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  const pool = [
    " ", " ", " ", "\n", "\r", "\t", "\r\n", "a", "Z", "q", "é", "ß", "1", "7", "0", "٣", "²", ".", ",",
    "!", "'", "\"", "-", "_", "/", "(", "<", ">", "|", "｜", "$", "+", "=", "中", "文", "の", "カ", "ー",
    "한", "я", "ع", "क", "्", "\u0301", "\u200d", "\u200b", "\u00a0", "\u3000", "\u2028", "\u0085",
    "😀", "🏽", "🇯", "\u0001", "\u000b", "abc", "The", " the", "  ", "123", "4567", "...", "\n\n",
  ];
  const out = [];
  for (let i = 0; i < count; ++i) {
    const len = 1 + Math.floor(next() * 24);
    let t = "";
    for (let k = 0; k < len; ++k) t += pool[Math.floor(next() * pool.length)];
    out.push(t);
  }
  return out;
}

function corpus() {
  const entries = Object.entries(fixed).map(([name, text]) => ({ name, text }));
  randomStrings(300, 20250131).forEach((text, i) => entries.push({ name: `random_${i}`, text }));
  return entries;
}

module.exports = { corpus };
