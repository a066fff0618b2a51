// Parses Mermaid diagrams with Mermaid's own parser (the one the renderer uses).
// Input: JSON on stdin, [{"name": str, "code": str}, ...]. Output: JSON on stdout,
// [{"name", "ok", "type", "error"}]. Exit code 1 when any diagram fails to parse.
import { JSDOM } from "jsdom";

const dom = new JSDOM("<!DOCTYPE html><html><body></body></html>", { pretendToBeVisual: true });
globalThis.window = dom.window;
globalThis.document = dom.window.document;
globalThis.DOMParser = dom.window.DOMParser;
globalThis.Element = dom.window.Element;
globalThis.HTMLElement = dom.window.HTMLElement;
globalThis.SVGElement = dom.window.SVGElement;

const { default: mermaid } = await import("mermaid");
mermaid.initialize({ startOnLoad: false, securityLevel: "strict" });

const chunks = [];
for await (const chunk of process.stdin) chunks.push(chunk);
const diagrams = JSON.parse(Buffer.concat(chunks).toString("utf8"));

const results = [];
for (const { name, code } of diagrams) {
  try {
    const parsed = await mermaid.parse(code, { suppressErrors: false });
    results.push({ name, ok: true, type: parsed.diagramType, error: null });
  } catch (err) {
    results.push({ name, ok: false, type: null, error: String(err && err.message ? err.message : err) });
  }
}
process.stdout.write(JSON.stringify(results));
process.exit(results.every((r) => r.ok) ? 0 : 1);
