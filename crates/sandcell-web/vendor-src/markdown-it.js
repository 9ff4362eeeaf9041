// markdown-it as one ES module (assets/vendor/markdown-it.js), built by scripts/rebuild-web-vendor.
export { default } from 'markdown-it';
