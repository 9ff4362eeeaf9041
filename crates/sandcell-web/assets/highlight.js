// Python syntax highlighting: a single regular expression splits the code into tokens,
// each wrapped in a span whose class the stylesheet colours. Unclosed strings (code still
// streaming) run to the end of their line, or of the code for triple-quoted ones.

const TOKEN = new RegExp(
  [
    /(#[^\n]*)/, // comment
    /((?:\b[rRbBuUfF]{1,2})?(?:"""[\s\S]*?(?:"""|$(?![\s\S]))|'''[\s\S]*?(?:'''|$(?![\s\S]))|"(?:\\.|[^"\\\n])*"?|'(?:\\.|[^'\\\n])*'?))/, // string
    /(\b(?:0[xX][\da-fA-F_]+|0[oO][0-7_]+|0[bB][01_]+|(?:\d[\d_]*\.?[\d_]*|\.\d[\d_]*)(?:[eE][+-]?\d+)?[jJ]?)\b)/, // number
    /(@[\w.]+)/, // decorator
    /\b([A-Za-z_]\w*)\b/, // name
  ]
    .map((part) => part.source)
    .join('|'),
  'g',
);

const KEYWORDS = new Set(
  ('False None True and as assert async await break class continue def del elif else except finally for from ' +
    'global if import in is lambda nonlocal not or pass raise return try while with yield match case').split(' '),
);

const BUILTINS = new Set(
  ('abs all any bool bytes callable chr dict dir divmod enumerate filter float format frozenset getattr hasattr ' +
    'hash hex id input int isinstance issubclass iter len list map max min next object open ord pow print ' +
    'range repr reversed round set setattr slice sorted str sum super tuple type vars zip self').split(' '),
);

/** The code as a fragment of text nodes and `<span class="tok-…">` elements. */
export function highlightPython(code) {
  const fragment = document.createDocumentFragment();
  let last = 0;
  let previousName = '';
  for (const match of code.matchAll(TOKEN)) {
    const [text, comment, string, number, decorator, name] = match;
    let kind = null;
    if (comment) kind = 'comment';
    else if (string) kind = 'string';
    else if (number) kind = 'number';
    else if (decorator) kind = 'decorator';
    else if (name) {
      if (KEYWORDS.has(name)) kind = 'keyword';
      else if (previousName === 'def' || previousName === 'class') kind = 'definition';
      else if (BUILTINS.has(name)) kind = 'builtin';
      previousName = name;
    }
    if (!kind) continue;
    if (match.index > last) fragment.append(code.slice(last, match.index));
    const span = document.createElement('span');
    span.className = `tok-${kind}`;
    span.textContent = text;
    fragment.append(span);
    last = match.index + text.length;
  }
  if (last < code.length) fragment.append(code.slice(last));
  return fragment;
}
