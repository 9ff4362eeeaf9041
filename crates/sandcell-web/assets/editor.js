// The code editor of notebook cells: CodeMirror 6 with Python highlighting (the `tok-…`
// classes the chat's code uses too), indentation, bracket matching and closing, undo,
// the run keys of JupyterLab, and completion from the live kernel.
//
// Each editor lives in a shadow root of its own. CodeMirror writes its base styles at run
// time; in a document it would add a <style> element, which the page's Content Security
// Policy (`style-src 'self'`, no 'unsafe-inline', no nonce) blocks, while in a shadow root
// it uses a constructed style sheet (`adoptedStyleSheets`), which the policy allows. The
// page's own rules for the editor come from editor.css, linked into the shadow root.

import {
  EditorState,
  EditorView,
  Prec,
  acceptCompletion,
  autocompletion,
  bracketMatching,
  classHighlighter,
  closeBrackets,
  closeBracketsKeymap,
  completionKeymap,
  completionStatus,
  defaultKeymap,
  drawSelection,
  highlightSpecialChars,
  history,
  historyKeymap,
  indentLess,
  indentMore,
  indentOnInput,
  indentUnit,
  keymap,
  placeholder,
  python,
  startCompletion,
  syntaxHighlighting,
} from './vendor/codemirror.js';
import { h } from './dom.js';

/** How many Unicode code points (what Python and Jupyter count) come before UTF-16 offset `offset`. */
export function codePointOffset(text, offset) {
  let points = 0;
  for (let i = 0; i < offset; i += 1) {
    const unit = text.charCodeAt(i);
    // The high half of a surrogate pair counts; its low half does not.
    if (unit < 0xdc00 || unit > 0xdfff) points += 1;
  }
  return points;
}

/** The UTF-16 offset (what the editor counts) of code point `points` of `text`. */
export function utf16Offset(text, points) {
  let offset = 0;
  for (const character of text) {
    if (points <= 0) break;
    offset += character.length;
    points -= 1;
  }
  return offset;
}

/**
 * A CodeMirror completion source asking the kernel: `complete(code, cursorPos, signal)`
 * resolves to Jupyter's complete_reply (`{matches, cursor_start, cursor_end}`, positions in
 * code points). Asked on Tab and Ctrl-Space (explicitly), and while typing after a `.`.
 */
function kernelCompletions(complete) {
  return async (context) => {
    const before = context.matchBefore(/[\w.]*/);
    if (!context.explicit && !(before && /\.\w*$/.test(before.text))) return null;
    const code = context.state.doc.toString();
    const controller = new AbortController();
    context.addEventListener('abort', () => controller.abort());
    let reply;
    try {
      reply = await complete(code, codePointOffset(code, context.pos), controller.signal);
    } catch {
      return null; // busy, or the request failed: no list, as with no matches
    }
    if (!reply?.matches?.length) return null;
    return {
      from: utf16Offset(code, reply.cursor_start),
      to: utf16Offset(code, reply.cursor_end),
      options: reply.matches.map((label) => ({ label })),
      validFor: /^\w*$/,
    };
  };
}

/** Whether the cursor is on the first or last line, with no selection and no completion list. */
function atEdge(view, edge) {
  const { state } = view;
  const { head, empty } = state.selection.main;
  if (!empty || completionStatus(state) !== null) return false;
  const line = state.doc.lineAt(head).number;
  return edge === 'first' ? line === 1 : line === state.doc.lines;
}

/** Tab completes after a name or a `.` (as in JupyterLab), and indents elsewhere. */
function tabKey(completes) {
  return {
    key: 'Tab',
    run: (view) => {
      if (completionStatus(view.state) === 'active') return acceptCompletion(view);
      const { from, empty } = view.state.selection.main;
      const before = view.state.sliceDoc(Math.max(0, from - 1), from);
      if (completes && empty && /[\w.]/.test(before)) return startCompletion(view);
      return indentMore(view);
    },
    shift: indentLess,
  };
}

/**
 * One editor. Options: `value`, `language` ('python' or 'markdown': text without
 * highlighting), `label` (its accessible name), `placeholder`, `complete` (see
 * kernelCompletions), `onChange(value)`, and `keys`: `run`, `runAndAdvance`,
 * `runAndInsert`, `leave` (Escape: to command mode), `up` and `down` (the arrows on the
 * first and last line: to the cell before or after), each called with no argument.
 */
export class CodeEditor {
  #view;

  constructor({ value = '', language = 'python', label = 'Code', placeholder: hint = '', complete = null, onChange = null, keys = {} } = {}) {
    this.element = h('div', { class: 'code-editor' });
    const root = this.element.attachShadow({ mode: 'open' });
    root.append(h('link', { rel: 'stylesheet', href: '/assets/editor.css' }));
    const call = (action) => () => {
      action?.();
      return Boolean(action);
    };
    const runKeys = [
      { key: 'Shift-Enter', run: call(keys.runAndAdvance) },
      { key: 'Mod-Enter', run: call(keys.run) },
      { key: 'Alt-Enter', run: call(keys.runAndInsert) },
      // Escape first closes an open completion list, then leaves the editor.
      { key: 'Escape', run: (view) => completionStatus(view.state) === null && call(keys.leave)() },
      // Up on the first line and down on the last go on to the cell before or after.
      { key: 'ArrowUp', run: (view) => atEdge(view, 'first') && call(keys.up)() },
      { key: 'ArrowDown', run: (view) => atEdge(view, 'last') && call(keys.down)() },
    ];
    const python3 = language === 'python';
    const extensions = [
      history(),
      drawSelection(),
      highlightSpecialChars(),
      indentUnit.of('    '),
      EditorState.tabSize.of(4),
      Prec.highest(keymap.of(runKeys)),
      keymap.of([...closeBracketsKeymap, tabKey(python3 && complete), ...defaultKeymap, ...historyKeymap]),
      EditorView.contentAttributes.of({ 'aria-label': label }),
      placeholder(hint),
      EditorView.updateListener.of((update) => {
        if (update.docChanged) onChange?.(update.state.doc.toString());
      }),
    ];
    if (python3) {
      extensions.push(python(), syntaxHighlighting(classHighlighter), indentOnInput(), bracketMatching(), closeBrackets());
      if (complete) {
        extensions.push(autocompletion({ override: [kernelCompletions(complete)], icons: false, defaultKeymap: false }), Prec.high(keymap.of(completionKeymap)));
      }
    } else {
      extensions.push(EditorView.lineWrapping);
    }
    this.#view = new EditorView({ state: EditorState.create({ doc: value, extensions }), parent: root });
  }

  get value() {
    return this.#view.state.doc.toString();
  }

  set value(text) {
    this.#view.dispatch({ changes: { from: 0, to: this.#view.state.doc.length, insert: text } });
  }

  focus() {
    this.#view.focus();
  }

  get hasFocus() {
    return this.#view.hasFocus;
  }
}
