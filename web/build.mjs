// Bundles the app into dist/ (embedded in the unio binary): one script, one
// stylesheet, one page. Deterministic, so the test command can tell a stale
// bundle from a fresh one.
import { build } from "esbuild";
import { copyFileSync, mkdirSync } from "node:fs";

mkdirSync("dist", { recursive: true });
await build({
  entryPoints: ["src/main.ts"],
  bundle: true,
  minify: true,
  format: "esm",
  target: "es2022",
  outfile: "dist/app.js",
  legalComments: "none",
  logLevel: "warning",
});
copyFileSync("static/index.html", "dist/index.html");
copyFileSync("static/app.css", "dist/app.css");
