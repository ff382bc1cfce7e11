// Console label page: the Print button opens the browser's print dialog (no inline script: CSP).
"use strict";
document.getElementById("print").addEventListener("click", () => window.print());
