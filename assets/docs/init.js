// Starts Swagger UI on this server's own document. The page loads nothing from elsewhere: no
// validator badge, no remote configuration.
window.ui = SwaggerUIBundle({
  url: "/openapi.json",
  dom_id: "#swagger-ui",
  deepLinking: true,
  validatorUrl: null,
  queryConfigEnabled: false,
  tryItOutEnabled: false,
});
