// Hard strings for tokenizer comparisons, and deterministic generated text.

export const STORY = `The Lighthouse Keeper's Cat

Once upon a time, on a rocky island far from the mainland, there lived an old lighthouse keeper named Tobias and his cat, Marigold. Every evening at 6:45 p.m., Tobias climbed the 142 steps of the tower to light the great lamp, and every evening Marigold followed him, her tail held high like a little flag.

"Do you think the ships see us?" Tobias asked one stormy night. The wind howled; the waves crashed against the rocks — BOOM! — and rain rattled the windows.

Marigold blinked slowly. She didn't answer, of course. Cats rarely do.

But far out on the dark sea, a small fishing boat called the "Søren & Daughters" was lost. Its captain, a tired woman named Ingrid, squinted through the rain... and there! A light, steady and warm, 3.5 kilometres to the north-east.

"We're saved," she whispered. "Somebody's keeping watch."

The next morning the storm had passed. Ingrid rowed to the island with a basket: fresh bread, a jar of honey, and — for Marigold — a small silver fish. Tobias laughed so hard his spectacles fell off.

From that day on, Ingrid visited every Sunday. She'd say, "Thank you for the light," and Tobias would say, "Thank the cat; she's the one who keeps me climbing."

And Marigold? She simply purred, curled up in the warm circle of the lamp, and dreamed of fish.

THE END.
`;

/** Strings every tokenizer is compared on (the special-token strings are added per vocabulary). */
export const HARD: string[] = [
  '',
  ' ',
  '  ',
  '   ',
  '\t',
  '\n',
  '\n\n\n',
  ' \n \n ',
  '\r\n\r\n',
  '\t\t  \t\n\n   \n',
  '                                                                ',
  'Hello',
  'Hello world',
  ' Hello world',
  'Hello world ',
  '  Hello   world  ',
  '\tindented\n\t\tmore\n',
  "I'm sure it's fine, we'll see; they've said you'd know. DON'T SHOUT'S",
  "'s 're 'Ve 'LL",
  'Zürich, São Paulo, naïve café, Ñandú, Ærøskøbing, Łódź',
  'e\u0301 a\u0300 n\u0303 o\u0308 — combining: Ame\u0301lie, Zu\u0308rich',
  '\u0301\u0301 leading combining marks',
  '日本語のテキストです。東京は大きい。',
  '中文文本：你好，世界！',
  '한국어 텍스트 안녕하세요',
  'русский текст, Москва',
  'العربية نص تجريبي',
  'हिन्दी पाठ नमस्ते',
  'ελληνικά κείμενο',
  'ภาษาไทย ข้อความ',
  'עברית טקסט',
  'mixed: English, 日本語, русский, العربية, हिन्दी, 123',
  '😀 😃 🎉 🚀',
  '👩‍👩‍👧‍👦 family 👨‍💻 coder 🏳️‍🌈 flag',
  '👍🏽 👋🏿 🤝🏻',
  '🇯🇵🇫🇷🇺🇸',
  '1234567',
  '3.14159',
  '1,000,000',
  '-42 +17 0x1F 1e-10 99.99% $1,234.56 €5',
  '12345678901234567890123456789012345678901234567890',
  '٣٤٥ ١٢ ४५६ 五六七',
  '2024-01-15T10:30:00Z',
  'def fib(n):\n    if n < 2:\n        return n\n    return fib(n - 1) + fib(n - 2)\n',
  'function f(x) {\n\treturn x.map((y) => y * 2).filter(Boolean);\n}\n',
  '#include <stdio.h>\nint main(void) { printf("%d\\n", 42); return 0; }',
  '<div class="a">&nbsp;&lt;tag&gt;</div>',
  'SELECT * FROM users WHERE id = 1; -- comment',
  'https://example.com/path/to/page?query=a&b=c#frag',
  'mailto:someone@example.org, ftp://files.example.net/pub/',
  'C:\\Users\\Name\\file.txt',
  '{"key": [1, 2, {"nested": null}], "s": "x\\ny"}',
  'aaaaaaaaaaaaaaaa',
  'a'.repeat(300),
  '!!!!!!!!!!!!!!!!!!!!????????',
  '..........',
  '------------------------------------------------------------',
  '============',
  'abababababababababababababab',
  'Supercalifragilisticexpialidocious',
  'pneumonoultramicroscopicsilicovolcanoconiosis',
  'Llanfairpwllgwyngyllgogerychwyrndrobwllllantysiliogogogoch',
  'xqzjvkwpfhbgmtdnrlcsy',
  'ÅÅÅÅ ääää ÿÿÿ',
  '\u0000\u0001\u0002\u0007\u001b[31mred\u001b[0m\u007f',
  '\u200b\u200c\u200d\u2060\ufeff zero-width',
  '\u00a0\u2002\u2003\u3000 odd spaces \u2028\u2029 \u0085',
  '\u{1D518}\u{1D52B}\u{1D526}\u{1D520}\u{1D52C}\u{1D521}\u{1D522}',
  '\u{10FFFD}\u{E000}\u{F8FF}',
  '\u{1F9EC}\u{1FA90}\u{1FAE0}',
  '𓀀𓀁 𐍈 𝄞',
  '\ud800 lone surrogate \udc00',
  'tab\tin\tthe\tmiddle',
  'trailing spaces   ',
  '   leading spaces',
  'line1\nline2\r\nline3\rline4',
  '<s>',
  '</s>',
  '<unk>',
  'a <s> b </s> c',
  'Text with <s> in the middle and </s> at the end</s>',
  '<|im_start|>user\nHello<|im_end|>\n<|im_start|>assistant\n',
  '<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nHi!<|eot_id|>',
  '<think>\nreasoning\n</think>\n\nanswer',
  '<|endoftext|>',
  'x<|endoftext|>y',
  '<|im_end|><|im_end|>',
  '<<|im_start|>>',
  '<|reserved_special_token_5|>',
  '<tool_call>{"name": "f"}</tool_call>',
  STORY,
];

/** A seeded PRNG (mulberry32). */
export function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const PIECES = [
  'the', ' the', 'The', ' and', 'ing', 'tion', ' ', '  ', '\n', '\n\n', '\t', '.', ',', '!', '?', "'s", "'t", ' 12', '345', '0',
  '3.14', 'é', 'e\u0301', 'ñ', 'ü', 'ß', '日本', '語', '中', 'ку', 'ش', 'ह', '😀', '👍🏽', '👩‍👩‍👧', '\u200d', '—', '…', '"', '(', ')', '{', '}',
  '<', '>', '</', '<s>', '</s>', '<|im_end|>', '<|eot_id|>', '<think>', '▁', 'Ġ', '\u00a0', '\u3000', '\r\n', '$', '%', '#', '@', '_', '~',
  'abc', 'XYZ', 'qu', 'zz', 'aaaa', ' a', ' b', 'http://', '.com', '/', '\\', '::', '->', '=>', '==', '+=', '//', '/*', '*/',
];

/** Deterministic random strings assembled from tricky pieces. */
export function randomStrings(count: number, seed: number): string[] {
  const r = rng(seed);
  const out: string[] = [];
  for (let i = 0; i < count; i++) {
    const n = 1 + Math.floor(r() * 12);
    let s = '';
    for (let j = 0; j < n; j++) s += PIECES[Math.floor(r() * PIECES.length)];
    out.push(s);
  }
  return out;
}

const SYLLABLES = ['ka', 'lo', 'mi', 'ren', 'tas', 'vo', 'qui', 'zen', 'dor', 'pha', 'el', 'un', 'strom', 'brix', 'ny', 'ga', 'sho', 'wey'];
const WORDS = STORY.split(/\s+/).filter(Boolean);

/** ~bytes of prose-like text: story words mixed with invented words, numbers and punctuation. */
export function generatedText(bytes: number, seed: number): string {
  const r = rng(seed);
  const parts: string[] = [];
  let size = 0;
  while (size < bytes) {
    let w: string;
    const x = r();
    if (x < 0.6) w = WORDS[Math.floor(r() * WORDS.length)];
    else if (x < 0.85) {
      w = '';
      const k = 1 + Math.floor(r() * 4);
      for (let j = 0; j < k; j++) w += SYLLABLES[Math.floor(r() * SYLLABLES.length)];
      if (r() < 0.2) w = w[0].toUpperCase() + w.slice(1);
    } else if (x < 0.93) w = String(Math.floor(r() * 100000));
    else if (x < 0.97) w = ['é', 'naïve', 'Zürich', '東京', 'привет', '😀', '—'][Math.floor(r() * 7)];
    else w = '\n';
    parts.push(w);
    size += w.length + 1;
  }
  return parts.join(' ');
}
