// End to end in a real browser: Debian's chromium, driven by playwright-core.
// tests/integration/test_web_browser.py starts the server and runs this
// with PB_URL (the console), PB_SMTP (host:port), PB_ADMIN / PB_PASSWORD,
// and PB_SHOTS (where the screenshots go). The server relays for loopback
// and holds its queue (max_concurrent = 0), so relayed mail waits there.
"use strict";
const { test } = require("node:test");
const assert = require("node:assert");
const { execFileSync } = require("node:child_process");
const fs = require("node:fs");
const path = require("node:path");
const { chromium } = require("playwright-core");

const URL = process.env.PB_URL;
const [SMTP_HOST, SMTP_PORT] = (process.env.PB_SMTP || "").split(":");
const SHOTS = process.env.PB_SHOTS || path.join(__dirname, "shots");
const USER = "e2e-user@localhost";

function sendMail(...to) {
  // smtplib, as a mail client would send it
  execFileSync("python3", ["-c", `
import smtplib, sys
with smtplib.SMTP(sys.argv[1], int(sys.argv[2]), timeout=10) as s:
    s.sendmail("someone@example.org", sys.argv[3:],
               b"Subject: from the browser test\\r\\n\\r\\nhello\\r\\n")
`, SMTP_HOST, SMTP_PORT, ...to]);
}

test("log in, add a user, see mail arrive, delete the user", async () => {
  assert.ok(URL, "PB_URL is not set");
  fs.mkdirSync(SHOTS, { recursive: true });
  const browser = await chromium.launch({
    executablePath: "/usr/bin/chromium",
    headless: true,
    args: ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
      "--disable-component-update", "--disable-sync", "--no-first-run"],
  });
  try {
    const ctx = await browser.newContext({ viewport: { width: 1100, height: 800 } });
    const page = await ctx.newPage();
    const problems = [];
    // The first /api/session before the login answers 401 by design; any
    // other error (a CSP refusal, a script error) is a failure.
    page.on("console", (m) => {
      if (m.type() === "error" && !/status of 401/.test(m.text())) problems.push(m.text());
    });
    page.on("pageerror", (e) => problems.push(String(e)));
    let wire = 0; // octets of every response the first load fetched
    const counting = (r) => r.request().sizes().then((s) => { wire += s.responseBodySize + s.responseHeadersSize; }, () => {});
    page.on("response", counting);

    await page.goto(URL);
    await page.fill("#login-user", process.env.PB_ADMIN);
    await page.fill("#login-pass", process.env.PB_PASSWORD);
    await page.click("#login-submit");
    await page.waitForSelector("#stat-accepted");
    await page.waitForLoadState("networkidle");
    page.off("response", counting);
    await page.screenshot({ path: path.join(SHOTS, "1-dashboard.png"), fullPage: true });
    console.log(`# dashboard load over the wire: ${wire} octets (${(wire / 1024).toFixed(1)} KiB)`);
    assert.ok(wire > 0 && wire <= 100 * 1024, `dashboard load ${wire} octets`);

    const accepted0 = Number(await page.textContent("#stat-accepted"));
    const bar0 = Number(await page.locator("#chart rect.in").last().getAttribute("data-count"));

    // add a user
    await page.click('#nav a[href="#/users"]');
    await page.fill("#add-user-address", USER);
    await page.fill("#add-user-password", "browser pw");
    await page.click("#add-user-submit");
    const row = page.locator(`tr[data-address="${USER}"]`);
    await row.waitFor();
    await page.screenshot({ path: path.join(SHOTS, "2-user-added.png"), fullPage: true });

    // mail for that user: the counter and the chart move
    sendMail(USER);
    await page.click('#nav a[href="#/dashboard"]');
    await page.waitForFunction((n) =>
      Number(document.querySelector("#stat-accepted")?.textContent) === n,
    accepted0 + 1, { timeout: 15000, polling: 200 });
    const bar1 = Number(await page.locator("#chart rect.in").last().getAttribute("data-count"));
    assert.strictEqual(bar1, bar0 + 1, "the chart's current hour grew by one");
    await page.screenshot({ path: path.join(SHOTS, "3-mail-counted.png"), fullPage: true });

    // the user's row shows the message; delete the user
    await page.click('#nav a[href="#/users"]');
    await row.waitFor();
    assert.strictEqual((await row.locator("td").nth(3).textContent()).trim(), "1");
    // used / quota: the message's octets, no quota set
    assert.match((await row.locator("td").nth(2).textContent()).trim(),
      /^[1-9][0-9.]* (B|KiB) \/ no quota$/);
    page.once("dialog", (d) => d.accept());
    await row.locator('button[data-action="delete"]').click();
    await row.waitFor({ state: "detached" });
    await page.screenshot({ path: path.join(SHOTS, "4-user-deleted.png"), fullPage: true });

    // the DNS page: the records at once, then what the resolver returns
    // for each, in words; "Check again" asks again
    await page.click('#nav a[href="#/dns"]');
    const seen = (type, name) =>
      page.locator(`tr[data-type="${type}"][data-name="${name}"] td.dns-status`);
    const mx = seen("MX", "example.org."), spf = seen("TXT", "example.org.");
    const dmarc = seen("TXT", "_dmarc.example.org.");
    await mx.waitFor();
    await page.waitForFunction(() => [...document.querySelectorAll("td.dns-status")]
      .every((td) => !/^(not checked yet|checking…)$/.test(td.textContent)),
    null, { timeout: 30000, polling: 100 });
    assert.strictEqual(await mx.textContent(), "ok");
    assert.strictEqual(await spf.textContent(), "differs: found v=spf1 a mx -all");
    assert.strictEqual(await dmarc.textContent(), "missing: NXDOMAIN (no such name)");
    assert.strictEqual(await mx.getAttribute("class"), "dns-status ok");
    await page.screenshot({ path: path.join(SHOTS, "5-dns.png"), fullPage: true });
    const again = page.locator('button[data-action="check"][data-domain="example.org"]');
    const asked = page.waitForResponse((r) => r.url().includes("/api/dns/check?domain=example.org"));
    await again.click();
    assert.strictEqual((await asked).status(), 200);
    await page.waitForFunction(() => !document.querySelector('button[data-domain="example.org"]').disabled);
    assert.strictEqual(await spf.textContent(), "differs: found v=spf1 a mx -all");

    // relayed mail waits in the queue: a row per recipient, the actions
    // once per message; bounce one, delete the other
    sendMail("far@remote.test", "away@remote.test");
    sendMail("later@remote.test");
    await page.click('#nav a[href="#/queue"]');
    const msgs = page.locator("tr[data-id] td.actions");
    await msgs.nth(1).waitFor();
    assert.strictEqual(await page.locator("tr[data-id]").count(), 3);
    assert.strictEqual(await msgs.count(), 2);
    assert.strictEqual(await msgs.first().getAttribute("rowspan"), "2");
    await page.screenshot({ path: path.join(SHOTS, "6-queue.png"), fullPage: true });
    await msgs.first().locator('button[data-action="retry"]').click();
    await page.waitForSelector(".flash.ok");
    assert.match(await page.textContent(".flash.ok"), /^Retrying [0-9a-f]{16} now \(2 recipients\)$/);
    page.once("dialog", (d) => d.accept());
    await msgs.first().locator('button[data-action="bounce"]').click();
    await page.waitForFunction(() => document.querySelectorAll("tr[data-id]").length === 1);
    assert.match(await page.textContent(".flash.ok"), /^Bounced [0-9a-f]{16} \(2 recipients\)$/);
    page.once("dialog", (d) => d.dismiss()); // a second thought: it stays
    await msgs.first().locator('button[data-action="delete"]').click();
    assert.strictEqual(await page.locator("tr[data-id]").count(), 1);
    page.once("dialog", (d) => d.accept());
    await msgs.first().locator('button[data-action="delete"]').click();
    await page.waitForSelector("text=The queue is empty.");
    assert.match(await page.textContent(".flash.ok"), /^Deleted [0-9a-f]{16} \(1 recipient\)$/);

    // on a phone
    await page.setViewportSize({ width: 375, height: 740 });
    await page.click('#nav a[href="#/dashboard"]');
    await page.waitForSelector("#stat-accepted");
    await page.screenshot({ path: path.join(SHOTS, "7-phone.png"), fullPage: true });
    const overflow = await page.evaluate(() => document.documentElement.scrollWidth > window.innerWidth + 1);
    assert.ok(!overflow, "no sideways scrolling on a phone");

    // log out
    await page.click("#logout");
    await page.waitForSelector("#login-form");
    assert.deepStrictEqual(problems, [], "no console errors (CSP violations show here)");
  } finally {
    await browser.close();
  }
});
