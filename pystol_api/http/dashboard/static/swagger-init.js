// Starts Swagger UI on the API documentation page (pystol_api/http/swagger_page.py).
// It lives in a file, not inline in the page, because the API's Content-Security-Policy
// runs no inline script. The OpenAPI document's URL comes from the page's data attribute.
const root = document.getElementById("swagger-ui");
window.ui = window.SwaggerUIBundle({
  url: new URL(root.dataset.openapiUrl, window.location.href).href,
  domNode: root,
  deepLinking: true,
  presets: [window.SwaggerUIBundle.presets.apis],
  plugins: [window.SwaggerUIBundle.plugins.DownloadUrl],
  // Not the "standalone" layout: its top bar's logo carries an inline <style> (refused).
  layout: "BaseLayout",
  showExtensions: true,
  showCommonExtensions: true,
  validatorUrl: null,  // no badge fetched from validator.swagger.io: nothing leaves this origin
});
