// DOMPurify as one ES module (assets/vendor/dompurify.js), built by scripts/rebuild-web-vendor.
export { default } from 'dompurify';
