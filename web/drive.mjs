#!/usr/bin/env node
// Drive the page in headless Chromium (the system's, through playwright-core: no browser download)
// the way a person does, and print what the page shows as one JSON object. Used by the tests,
// by make bench (browser tokens/s) and to take docs/web.png.
//
//   node web/drive.mjs URL [--chromium /usr/bin/chromium] [--set FIELD=VALUE]... [--files A,B]
//                      [--drop A,B] [--generate] [--stop-after N] [--runs N] [--screenshot PNG] [--timeout SECONDS]
//
// --set types into a field, --files chooses model files in the page's file input, --drop drops them
// on the page as a drag and drop from the file manager does, --generate presses Generate
// (needed unless the URL has autostart=1), --stop-after presses Stop once #output has N characters,
// --runs N presses Generate again after each run until N have finished (the last one is reported:
// a warm run, for timing). It waits until #output's data-state is done or error, then prints
// {state, output, error, notice, stats, tokensPerSecond, stopped, query, fields, console}.
//
// With --stdin it drives one page per line of standard input, each line a JSON list of the
// arguments above (the URL first), in a fresh browser context of one Chromium, and prints one
// JSON object per line ({driverError} when that page failed): web/browser.py keeps one such
// process, so that its caller starts Chromium once, not once a page.

import { readFileSync } from "node:fs";
import { basename } from "node:path";
import { createInterface } from "node:readline";
import { parseArgs } from "node:util";
import { chromium } from "playwright-core";

const OPTIONS = {
  chromium: { type: "string", default: "/usr/bin/chromium" }, set: { type: "string", multiple: true, default: [] },
  files: { type: "string" }, drop: { type: "string" }, generate: { type: "boolean", default: false }, "stop-after": { type: "string" },
  runs: { type: "string", default: "1" }, screenshot: { type: "string" }, timeout: { type: "string", default: "120" },
  stdin: { type: "boolean", default: false },
};
const parse = (args) => parseArgs({ allowPositionals: true, options: OPTIONS, args });

async function drivePage(browser, url, values) {
  const timeout = Number(values.timeout) * 1000;
  const context = await browser.newContext({ viewport: { width: 1000, height: 720 } });
  try {
    const page = await context.newPage();
    page.setDefaultTimeout(timeout);
    const console = [];
    page.on("console", (msg) => { if (msg.type() === "error") console.push(msg.text()); });
    page.on("pageerror", (err) => console.push(String(err)));
    await page.goto(url);
    for (const assignment of values.set) {
      const [field, ...rest] = assignment.split("=");
      await page.fill(`#${field}`, rest.join("="));
    }
    if (values.files) await page.setInputFiles("#model-files", values.files.split(","));
    if (values.drop) {
      const files = values.drop.split(",").map((path) => ({ name: basename(path), base64: readFileSync(path).toString("base64") }));
      const transfer = await page.evaluateHandle((files) => {
        const data = new DataTransfer();
        for (const { name, base64 } of files) data.items.add(new File([Uint8Array.from(atob(base64), (c) => c.charCodeAt(0))], name));
        return data;
      }, files);
      await page.dispatchEvent("#model", "drop", { dataTransfer: transfer });
      await page.waitForFunction(() => document.getElementById("model-source").textContent.endsWith("from disk"));
    }
    if (values.files) await page.waitForFunction(() => document.getElementById("model-source").textContent.endsWith("from disk"));
    if (values.generate) await page.click("#generate");
    if (values["stop-after"]) {
      await page.waitForFunction((n) => document.getElementById("output").textContent.length >= n, Number(values["stop-after"]));
      await page.click("#stop");
    }
    const finished = () => page.waitForFunction(() => ["done", "error"].includes(document.getElementById("output").dataset.state));
    await finished();
    for (let run = 1; run < Number(values.runs); run++) {
      await page.click("#generate");
      await finished();
    }
    if (values.screenshot) await page.screenshot({ path: values.screenshot, fullPage: true });
    const result = await page.evaluate(() => {
      const $ = (id) => document.getElementById(id);
      const fields = Object.fromEntries(["prompt", "tokens", "temperature", "top_k", "seed"].map((id) => [id, $(id).value]));
      return {
        state: $("output").dataset.state, output: $("output").textContent, stopped: $("output").dataset.stopped === "true",
        error: $("error").hidden ? "" : $("error").textContent, notice: $("notice").hidden ? "" : $("notice").textContent,
        stats: $("stats").textContent, tokensPerSecond: Number($("stats").dataset.tokensPerSecond) || null,
        query: location.search, fields,
      };
    });
    return { ...result, console };
  } finally {
    await context.close();
  }
}

const { values, positionals } = parse(process.argv.slice(2));
// Headless, and nothing that reaches for the network (there is none). Playwright gives each launch
// a fresh profile (--user-data-dir) of its own and removes it on close.
const args = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
              "--disable-background-networking", "--disable-component-update", "--disable-sync",
              "--disable-default-apps", "--disable-extensions"];
const browser = await chromium.launch({ executablePath: values.chromium, args, timeout: Number(values.timeout) * 1000 });
try {
  if (values.stdin) {
    for await (const line of createInterface({ input: process.stdin })) {
      let reply;
      try {
        const request = parse(JSON.parse(line));
        reply = await drivePage(browser, request.positionals[0], request.values);
      } catch (err) {
        reply = { driverError: String((err && err.stack) || err) };
      }
      process.stdout.write(JSON.stringify(reply) + "\n");
    }
  } else {
    process.stdout.write(JSON.stringify(await drivePage(browser, positionals[0], values)) + "\n");
  }
} finally {
  await browser.close();
}
