// MathJax 3 for the whole site. Markdown pages and API docstrings reach it through
// pymdownx.arithmatex (class "arithmatex", \( \) and \[ \] delimiters); the rendered notebooks
// keep Jupyter's $ and $$ delimiters inside their Markdown cells (class "jp-RenderedMarkdown").
// Nothing else on a page is touched, so a "$" in code or prose stays a dollar sign.
window.MathJax = {
  tex: {
    inlineMath: [["\\(", "\\)"], ["$", "$"]],
    displayMath: [["\\[", "\\]"], ["$$", "$$"]],
    processEscapes: true,
    processEnvironments: true,
  },
  options: {
    ignoreHtmlClass: ".*|",
    processHtmlClass: "arithmatex|jp-RenderedMarkdown",
  },
};

// Material's instant navigation swaps pages without reloading: typeset each new page.
document$.subscribe(() => {
  if (window.MathJax && MathJax.typesetPromise) {
    MathJax.startup.output.clearCache();
    MathJax.typesetClear();
    MathJax.texReset();
    MathJax.typesetPromise();
  }
});
