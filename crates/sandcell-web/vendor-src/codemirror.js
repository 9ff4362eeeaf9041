// What the page uses of CodeMirror 6 and Lezer, bundled into one ES module
// (assets/vendor/codemirror.js) by scripts/rebuild-web-vendor.
export { EditorState, Prec, Compartment } from '@codemirror/state';
export {
  EditorView,
  keymap,
  drawSelection,
  highlightActiveLine,
  highlightSpecialChars,
  placeholder,
} from '@codemirror/view';
export {
  bracketMatching,
  indentOnInput,
  indentUnit,
  syntaxHighlighting,
  HighlightStyle,
} from '@codemirror/language';
export { defaultKeymap, history, historyKeymap, indentLess, indentMore } from '@codemirror/commands';
export {
  autocompletion,
  closeBrackets,
  closeBracketsKeymap,
  completionKeymap,
  startCompletion,
  completionStatus,
  acceptCompletion,
} from '@codemirror/autocomplete';
export { python, pythonLanguage } from '@codemirror/lang-python';
export { classHighlighter, highlightCode, tags } from '@lezer/highlight';
export { parser as pythonParser } from '@lezer/python';
