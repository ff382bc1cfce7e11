// Starts Swagger UI on /docs (kept out of the page so the CSP can forbid inline scripts).
"use strict";
(function () {
  var root = document.getElementById("swagger-ui");
  window.ui = SwaggerUIBundle({
    url: root.getAttribute("data-openapi-url"),
    dom_id: "#swagger-ui",
    deepLinking: false, // with it, each operation's link sits inside its toggle button (axe: nested-interactive)
    presets: [SwaggerUIBundle.presets.apis],
    layout: "BaseLayout",
    validatorUrl: null,
  });
})();
