/// <reference lib="dom" />
import { existsSync, readFileSync } from "node:fs";
import { mkdir, readFile } from "node:fs/promises";
import { createServer, type Server } from "node:http";
import { createRequire } from "node:module";
import type { AddressInfo } from "node:net";
import { buildApi } from "@postern/api";
import { sqlPoolOf, uuidv7 } from "@postern/db";
import { createDeliveryProducer, type DeliveryProducer } from "@postern/queue";
import { createAcceptor, type RunningSmtp, startSmtp, summariseHeaders } from "@postern/smtp";
import { createLogger, createMetricsRegistry } from "@postern/telemetry";
import {
  createProjectFixture,
  createTestContext,
  type ProjectFixture,
  SmtpSink,
  type TestContext,
  WebhookReceiver,
} from "@postern/testkit";
import { type RunningWorker, startWorker } from "@postern/worker";
import type { FastifyInstance } from "fastify";
import nodemailer from "nodemailer";
import { type Browser, type BrowserContext, chromium, type Page } from "playwright-core";
import { Webhook } from "standardwebhooks";
import { afterAll, beforeAll, describe, expect, it } from "vitest";

/*
 * The dashboard in a real browser (Debian's chromium, driven by playwright-core) against the real
 * API, SMTP and worker roles over real PostgreSQL and Redis, delivering to a real SMTP sink. One
 * browser for the file; each test signs in in a context of its own (its own cookies).
 *
 * UPDATE_SCREENSHOTS=1 also writes each page's screenshot to docs/dashboard/ (docs/dashboard.md
 * shows them); without it the tree is left as it is.
 */

const chromiumPath = process.env.CHROMIUM_PATH ?? "/usr/bin/chromium";
const screenshotsDir = new URL("../../../docs/dashboard/", import.meta.url);
const updateScreenshots = process.env.UPDATE_SCREENSHOTS === "1";
const axeSource = readFileSync(createRequire(import.meta.url).resolve("axe-core/axe.min.js"), "utf8");
const log = createLogger({ level: "silent" });
/** A browser test waits on a real browser, SMTP and delivery: bounded, with room for a loaded machine. */
const browserTestTimeoutMs = 120_000;

let ctx: TestContext;
let api: FastifyInstance;
let smtp: RunningSmtp;
let worker: RunningWorker;
let producer: DeliveryProducer;
let sink: SmtpSink;
let browser: Browser;
let base: string;
let a: ProjectFixture;
let b: ProjectFixture;
const contexts: BrowserContext[] = [];

beforeAll(async () => {
  if (!existsSync(chromiumPath)) {
    throw new Error(`no browser at ${chromiumPath}: apt-get install -y chromium (or set CHROMIUM_PATH)`);
  }
  // Webhooks go to a receiver on a loopback port, which the address policy refuses otherwise.
  ctx = await createTestContext({ DELIVERY_BACKOFF: "1,1", WEBHOOK_ALLOW_PRIVATE: "true" });
  api = await buildApi({
    config: ctx.config,
    db: ctx.db,
    redis: ctx.redis,
    log,
    metrics: createMetricsRegistry(),
    auditStream: { keepAliveMs: 1_000, pollIntervalMs: 100 },
  });
  base = await api.listen({ host: "127.0.0.1", port: 0 });
  smtp = await startSmtp({ ...ctx, log, metrics: createMetricsRegistry() }, { smtpPort: 0, smtpsPort: 0 });
  worker = await startWorker({
    config: ctx.config,
    db: ctx.db,
    redis: ctx.redis,
    log,
    metrics: createMetricsRegistry(),
  });
  producer = createDeliveryProducer(ctx.redis, ctx.redisKeyPrefix);
  sink = await SmtpSink.start();
  a = await createProjectFixture(ctx.db, ctx.config, { name: "Acme mail", upstream: sink.url });
  b = await createProjectFixture(ctx.db, ctx.config, { name: "Other tenant", upstream: sink.url });
  // Root cannot run chromium's sandbox; the pages it opens are the test's own.
  browser = await chromium.launch({ executablePath: chromiumPath, args: ["--no-sandbox"] });
  if (updateScreenshots) await mkdir(screenshotsDir, { recursive: true });
});

afterAll(async () => {
  for (const context of contexts) await context.close();
  await browser?.close();
  await api?.close();
  await worker?.stop();
  await smtp?.stop();
  await producer?.close();
  await sink?.stop();
  await ctx?.close();
});

/** A fresh browser context signed in with `token` through the sign-in form. */
async function signIn(token: string, options: { timezoneId?: string } = {}): Promise<Page> {
  const context = await browser.newContext({
    acceptDownloads: true,
    locale: "en-US",
    timezoneId: options.timezoneId ?? "UTC",
    viewport: { width: 1280, height: 860 },
  });
  contexts.push(context);
  const page = await context.newPage();
  // Any Content Security Policy violation (an inline style or script the pages should not need).
  await page.addInitScript(() => {
    const seen: string[] = [];
    (window as unknown as { cspViolations: string[] }).cspViolations = seen;
    document.addEventListener("securitypolicyviolation", (event) =>
      seen.push(`${event.violatedDirective} ${event.blockedURI}`),
    );
  });
  await page.goto(`${base}/`);
  await page.getByLabel("API token or operator token").fill(token);
  await page.getByRole("button", { name: "Sign in" }).click();
  await page.getByRole("button", { name: "Sign out" }).waitFor();
  return page;
}

async function settled(page: Page) {
  await page.locator("h1").first().waitFor();
  await page.waitForFunction(() => !document.body.innerText.includes("Loading…"));
}

async function expectNoCspViolations(page: Page) {
  expect(await page.evaluate(() => (window as unknown as { cspViolations: string[] }).cspViolations)).toEqual(
    [],
  );
}

function smtpTransport(username: string, password: string) {
  return nodemailer.createTransport({
    host: "127.0.0.1",
    port: smtp.ports.smtp,
    name: "client.test",
    requireTLS: true,
    auth: { user: username, pass: password },
    tls: { rejectUnauthorized: false },
  });
}

async function sendOverSmtp(fixture: ProjectFixture, subject: string): Promise<string> {
  const transport = smtpTransport(fixture.smtp.username, fixture.smtp.password);
  try {
    const { response } = await transport.sendMail({
      from: "app@example.com",
      to: "user@example.net",
      subject,
      text: `hello from ${subject}`,
    });
    const id = /queued as (\S+)/.exec(response)?.[1];
    if (!id) throw new Error(`no id in ${response}`);
    return id;
  } finally {
    transport.close();
  }
}

/** Stores a held message through the acceptor, as a rule's `hold` does. */
async function holdMessage(fixture: ProjectFixture, subject: string): Promise<string> {
  const acceptor = createAcceptor({ sql: sqlPoolOf(ctx.db), producer, log });
  const id = uuidv7();
  const bytes = Buffer.from(
    `From: <app@example.com>\r\nTo: <held@example.net>\r\nSubject: ${subject}\r\nMessage-ID: <${id}@example.com>\r\n\r\nheld ${id}\r\n`,
  );
  const outcome = await acceptor.accept({
    id,
    client: { project: { id: fixture.project.id, mode: "live" }, actor: "test" },
    ip: "127.0.0.1",
    mailFrom: "app@example.com",
    recipients: ["held@example.net"],
    bytes,
    headers: summariseHeaders(bytes),
    initialStatus: "held",
  });
  expect(outcome.ok).toBe(true);
  await acceptor.settled();
  return id;
}

/** axe-core's serious and critical findings on the page as it is, each with where. */
async function accessibilityViolations(page: Page): Promise<string[]> {
  await page.evaluate(axeSource);
  return page.evaluate(async () => {
    const axe = (
      window as unknown as {
        axe: {
          run(): Promise<{
            violations: Array<{ id: string; impact: string; nodes: Array<{ target: string[] }> }>;
          }>;
        };
      }
    ).axe;
    const result = await axe.run();
    return result.violations
      .filter((v) => v.impact === "serious" || v.impact === "critical")
      .map((v) => `${v.id} at ${v.nodes.map((n) => n.target.join(" ")).join(", ")}`);
  });
}

async function screenshot(page: Page, name: string) {
  if (updateScreenshots)
    await page.screenshot({ path: new URL(`${name}.png`, screenshotsDir).pathname, fullPage: true });
}

describe("dashboard", () => {
  it(
    "signs in with a project token (cookie only) and shows a message sent over SMTP as it arrives",
    async () => {
      const page = await signIn(a.apiToken.token, { timezoneId: "Asia/Tokyo" });
      // The session is a cookie the page's scripts cannot read; the token is kept nowhere.
      const [cookie] = await page.context().cookies();
      expect(cookie).toMatchObject({ name: "postern_session", httpOnly: true, sameSite: "Strict" });
      const stored = await page.evaluate(
        () => JSON.stringify({ ...localStorage, ...sessionStorage }) + document.cookie,
      );
      expect(stored).not.toContain(a.apiToken.token);
      expect(stored).not.toContain("postern_session");
      expect(page.url()).not.toContain(a.apiToken.token);

      await page.getByRole("link", { name: "Messages" }).click();
      await settled(page);
      const subject = `Live arrival ${uuidv7()}`;
      const id = await sendOverSmtp(a, subject);
      // No reload: the page reads its first page again by itself.
      const row = page.locator(`tr[data-message-id="${id}"]`);
      await row.waitFor({ timeout: 20_000 });
      await expect(row.textContent()).resolves.toContain(subject);
      // Times are shown in the browser's time zone.
      const time = row.locator("time");
      const iso = (await time.getAttribute("datetime")) as string;
      // (ICU versions differ in the space before AM/PM: compared with any white space as one.)
      const spaced = (text: string | null) => (text ?? "").replace(/\s/g, " ");
      expect(spaced(await time.textContent())).toBe(
        spaced(new Date(iso).toLocaleString("en-US", { timeZone: "Asia/Tokyo" })),
      );
      await expectNoCspViolations(page);
    },
    browserTestTimeoutMs,
  );

  it(
    "opens a message's detail (envelope, headers, attempts, events) and downloads its raw bytes",
    async () => {
      const subject = `Detail ${uuidv7()}`;
      const id = await sendOverSmtp(a, subject);
      const page = await signIn(a.apiToken.token);
      await page.goto(`${base}/#/messages`);
      // Filtered by subject, the list holds this message and not another one.
      const unrelated = `Unrelated ${uuidv7()}`;
      await sendOverSmtp(a, unrelated);
      await page.getByRole("link", { name: unrelated }).waitFor({ timeout: 20_000 });
      await page.getByLabel("Subject contains").fill(subject);
      await page.getByRole("button", { name: "Apply" }).click();
      await page.getByRole("link", { name: unrelated }).waitFor({ state: "detached" });
      await page.getByRole("link", { name: subject }).waitFor();
      expect(await page.locator("tr[data-message-id]").count()).toBe(1);
      await page.getByRole("link", { name: subject }).click();
      await page.getByRole("heading", { name: subject }).waitFor();
      await expect(page.locator("pre.headers").textContent()).resolves.toContain(`Subject: ${subject}`);
      // Delivered by the worker: the page reads the message again until it says so.
      await page.locator(".toolbar .status-delivered").waitFor({ timeout: 20_000 });
      await page.getByRole("heading", { name: "Delivery attempts" }).waitFor();
      await page.locator("ol.events li", { hasText: "message.delivered" }).waitFor({ timeout: 20_000 });

      const [download] = await Promise.all([
        page.waitForEvent("download"),
        page.getByRole("link", { name: "Download raw message" }).click(),
      ]);
      const downloaded = await readFile(await download.path());
      const stored = Buffer.from(
        await (
          await fetch(`${base}/v1/messages/${id}/raw`, {
            headers: { authorization: `Bearer ${a.apiToken.token}` },
          })
        ).arrayBuffer(),
      );
      expect(downloaded.length).toBeGreaterThan(0);
      expect(downloaded.equals(stored)).toBe(true);
      expect(download.suggestedFilename()).toBe(`${id}.eml`);
      await screenshot(page, "message");
      await expectNoCspViolations(page);
    },
    browserTestTimeoutMs,
  );

  it(
    "counts the hold queue in a dry run, approves a held message and shows it delivered",
    async () => {
      const subject = `Held ${uuidv7()}`;
      const id = await holdMessage(a, subject);
      const page = await signIn(a.apiToken.token);
      await page.goto(`${base}/#/holds`);
      const row = page.locator(`tr[data-message-id="${id}"]`);
      await row.waitFor();
      await page.getByRole("button", { name: "Count for approve" }).click();
      await expect(page.locator("[data-dry-run]").textContent()).resolves.toMatch(
        /1 held messages match; 1 would be approved/,
      );
      expect((await ctx.db.message.findUniqueOrThrow({ where: { id } })).status).toBe("held");
      await screenshot(page, "holds");

      const delivered = sink.messages.length;
      await row.getByRole("button", { name: "Approve" }).click();
      await sink.waitFor(delivered + 1, 20_000);
      expect(sink.messages.some((m) => m.raw.toString().includes(`held ${id}`))).toBe(true);
      await page.goto(`${base}/#/messages/${id}`);
      await page.locator(".toolbar .status-delivered").waitFor({ timeout: 20_000 });
    },
    browserTestTimeoutMs,
  );

  it(
    "cannot reach another project's message by its URL",
    async () => {
      const theirs = await holdMessage(b, "Another tenant's secret subject");
      const page = await signIn(a.apiToken.token);
      await page.goto(`${base}/#/messages/${theirs}`);
      await page
        .getByRole("alert")
        .filter({ hasText: `no message ${theirs}` })
        .first()
        .waitFor();
      expect(await page.content()).not.toContain("Another tenant's secret subject");
      // Nor by asking the API from the page with its session.
      const status = await page.evaluate(
        async (path) => (await fetch(path)).status,
        `/v1/messages/${theirs}`,
      );
      expect(status).toBe(404);
    },
    browserTestTimeoutMs,
  );

  it(
    "refuses a POST from another origin that carries the session cookie",
    async () => {
      const id = await holdMessage(a, `Cross-site target ${uuidv7()}`);
      const page = await signIn(a.apiToken.token);
      const cancel = `${base}/v1/messages/${id}/cancel`;
      // Another origin on the same host (another port): same-site, so the cookie goes with it.
      const attacker: Server = createServer((request, response) => {
        if (request.url === "/attack.js") {
          response.setHeader("content-type", "text/javascript");
          response.end(
            `fetch(${JSON.stringify(cancel)}, { method: "POST", mode: "no-cors", credentials: "include", body: "" })` +
              `.finally(() => { document.title = "sent"; });`,
          );
          return;
        }
        response.setHeader("content-type", "text/html");
        response.end(`<!doctype html><title>attacker</title><script src="/attack.js"></script>`);
      });
      await new Promise<void>((resolve) => attacker.listen(0, "127.0.0.1", resolve));
      try {
        // The request reaches the server with the cookie; its answer is not readable by the page
        // either way (Cross-Origin-Resource-Policy), so what counts is what the server did.
        const ended = new Promise<void>((resolve) => {
          const done = (request: { url(): string }) => {
            if (request.url() === cancel) resolve();
          };
          page.on("requestfinished", done);
          page.on("requestfailed", done);
        });
        await page.goto(`http://127.0.0.1:${(attacker.address() as AddressInfo).port}/`);
        await ended;
        await page.waitForFunction(() => document.title === "sent");
      } finally {
        attacker.close();
      }
      expect((await ctx.db.message.findUniqueOrThrow({ where: { id } })).status).toBe("held");
      // The same request from the dashboard's own origin is allowed: the cookie was valid.
      await page.goto(`${base}/`);
      const status = await page.evaluate(
        async (path) => (await fetch(path, { method: "POST" })).status,
        `/v1/messages/${id}/cancel`,
      );
      expect(status).toBe(202);
      expect((await ctx.db.message.findUniqueOrThrow({ where: { id } })).status).toBe("cancelled");
    },
    browserTestTimeoutMs,
  );

  it(
    "lets the operator create a project, showing its secrets once, and revoke a credential",
    async () => {
      const page = await signIn(ctx.config.adminToken);
      await page.getByRole("link", { name: "Projects" }).click();
      await settled(page);
      await page.getByText("New project").click();
      await page.getByLabel("Name").fill("Created in the browser");
      await page.getByLabel("Upstream").fill(sink.url);
      await page.getByRole("button", { name: "Create project" }).click();
      const password = (await page.locator('[data-secret="SMTP password"]').textContent()) as string;
      const username = (await page.locator('[data-secret="SMTP username"]').textContent()) as string;
      const token = (await page.locator('[data-secret="API token"]').textContent()) as string;
      expect(password).toMatch(/^pst_secret_/);
      expect(token).toMatch(/^pst_api_/);
      await screenshot(page, "project-created");
      // The secrets work...
      const project = await fetch(`${base}/v1/project`, { headers: { authorization: `Bearer ${token}` } });
      expect(((await project.json()) as { name: string }).name).toBe("Created in the browser");
      // ...and are gone from the page once dismissed, and from every later answer.
      await page.getByRole("button", { name: "Done" }).click();
      expect(await page.content()).not.toContain(password);
      await page.reload();
      await settled(page);
      expect(await page.content()).not.toContain(password);
      expect(await page.content()).not.toContain(token);

      await page.getByRole("link", { name: "Created in the browser" }).click();
      await page.getByRole("link", { name: "Credentials and tokens" }).click();
      await settled(page);
      page.once("dialog", (dialog) => void dialog.accept());
      await page.locator(`tr[data-credential="${username}"]`).getByRole("button", { name: "Revoke" }).click();
      await page.locator(`tr[data-credential="${username}"] .status-revoked`).waitFor();
      // SMTP refuses it at once.
      const refused = await smtpTransport(username, password)
        .verify()
        .then(
          () => undefined,
          (error: { responseCode?: number }) => error.responseCode,
        );
      expect(refused).toBe(535);
    },
    browserTestTimeoutMs,
  );

  it(
    "adds a webhook (its secret shown once), sends a test event and shows it delivered, signed",
    async () => {
      const receiver = await WebhookReceiver.start();
      try {
        const page = await signIn(a.apiToken.token);
        await page.getByRole("link", { name: "Webhooks" }).click();
        await settled(page);
        await page.getByText("New webhook").click();
        await page.getByLabel("URL").fill(receiver.url);
        // The event types are the API's own list.
        await page.getByLabel("message.delivered", { exact: true }).check();
        await page.getByLabel("message.failed", { exact: true }).check();
        await page.getByLabel("Description (optional)").fill("Browser test receiver");
        await page.getByRole("button", { name: "Add webhook" }).click();
        const secret = (await page.locator('[data-secret="Signing secret"]').textContent()) as string;
        expect(secret).toMatch(/^whsec_[A-Za-z0-9+/]+=*$/);
        const row = page.locator(`tr[data-webhook="${receiver.url}"]`);
        await expect(row.textContent()).resolves.toContain("message.delivered, message.failed");
        await screenshot(page, "webhook-created");
        // Shown once: gone when dismissed, and from every later answer.
        await page.getByRole("button", { name: "Done" }).click();
        expect(await page.content()).not.toContain(secret);

        await row.getByRole("button", { name: "Send test event" }).click();
        // The deliveries log opens and is read again until the worker has delivered it.
        const delivery = page.locator('tr[data-event-type="webhook.test"]');
        await delivery.locator(".status-succeeded").waitFor({ timeout: 30_000 });
        await expect(delivery.locator("td").nth(3).textContent()).resolves.toBe("1");
        await expect(delivery.locator("td").nth(5).textContent()).resolves.toMatch(/^200\b/);
        // The receiver got it, signed with the secret the page showed.
        const testsReceived = () =>
          receiver.received.filter((r) => (JSON.parse(r.body) as { type: string }).type === "webhook.test");
        const tests = testsReceived();
        expect(tests).toHaveLength(1);
        const [test] = tests as [(typeof tests)[number]];
        const event = new Webhook(secret).verify(test.body, test.headers as Record<string, string>) as {
          type: string;
          projectId: string;
        };
        expect(event).toMatchObject({ type: "webhook.test", projectId: a.project.id });
        expect(await accessibilityViolations(page)).toEqual([]);
        await screenshot(page, "webhook-deliveries");

        // Replay of one delivery: the same event again, with the same webhook-id.
        await delivery.getByRole("button", { name: "Replay" }).click();
        await receiver.until(() => testsReceived().length === 2, "the replayed test event");
        const [first, again] = testsReceived() as [(typeof tests)[number], (typeof tests)[number]];
        expect(again.headers["webhook-id"]).toBe(first.headers["webhook-id"]);
        // Replay of what failed since a time: nothing failed.
        await page.getByLabel("Failed since").fill("2020-01-01T00:00");
        await page.getByRole("button", { name: "Replay failed since" }).click();
        await page.getByText("0 failed deliveries sent again.").waitFor();

        await page.reload();
        await settled(page);
        expect(await page.content()).not.toContain(secret);
        // Disabled: nothing is sent to it, so no test event is offered; then enabled again.
        await row.getByRole("button", { name: "Disable" }).click();
        await row.locator(".status-disabled").waitFor();
        expect(await row.getByRole("button", { name: "Send test event" }).count()).toBe(0);
        await row.getByRole("button", { name: "Enable" }).click();
        await row.locator(".status-active").waitFor();
        page.once("dialog", (dialog) => void dialog.accept());
        await row.getByRole("button", { name: "Delete" }).click();
        await row.waitFor({ state: "detached" });
        const listed = await fetch(`${base}/v1/webhooks`, {
          headers: { authorization: `Bearer ${a.apiToken.token}` },
        });
        expect(((await listed.json()) as { items: unknown[] }).items).toEqual([]);
        await expectNoCspViolations(page);
      } finally {
        await receiver.stop();
      }
    },
    browserTestTimeoutMs,
  );

  it(
    "follows the project's audit log live",
    async () => {
      const page = await signIn(a.apiToken.token);
      await page.goto(`${base}/#/audit`);
      await settled(page);
      // Once the stream is open, the page reads its first page again (what was written meanwhile).
      const streamOpen = page.waitForResponse(
        (response) => new URL(response.url()).pathname === "/v1/audit-logs",
      );
      await page.getByRole("button", { name: "Follow live" }).click();
      await streamOpen;
      // An event written while the page follows (an API call with the token), and one of another project.
      for (const fixture of [b, a]) {
        const added = await fetch(`${base}/v1/suppressions`, {
          method: "POST",
          headers: { authorization: `Bearer ${fixture.apiToken.token}`, "content-type": "application/json" },
          body: JSON.stringify({
            address: `live-${fixture.project.name.replace(/\W/g, "")}@example.net`,
            reason: "manual",
          }),
        });
        expect(added.status).toBe(201);
      }
      await page
        .locator('tr[data-action="suppression.added"]', { hasText: "live-Acmemail@example.net" })
        .waitFor();
      expect(await page.content()).not.toContain("live-Othertenant@example.net");
    },
    browserTestTimeoutMs,
  );

  it(
    "has no serious accessibility violations on any page (axe-core), and no CSP violation",
    async () => {
      const held = await holdMessage(a, "Waiting for a decision");
      const pages: Array<{ token: string; name: string; path: string }> = [
        { token: a.apiToken.token, name: "overview", path: "#/" },
        { token: a.apiToken.token, name: "messages", path: "#/messages" },
        { token: a.apiToken.token, name: "message-held", path: `#/messages/${held}` },
        { token: a.apiToken.token, name: "holds", path: "#/holds" },
        { token: a.apiToken.token, name: "suppressions", path: "#/suppressions" },
        { token: a.apiToken.token, name: "webhooks", path: "#/webhooks" },
        { token: a.apiToken.token, name: "domains", path: "#/domains" },
        { token: a.apiToken.token, name: "rules", path: "#/rules" },
        { token: a.apiToken.token, name: "audit", path: "#/audit" },
        { token: a.apiToken.token, name: "credentials-project", path: "#/credentials" },
        { token: ctx.config.adminToken, name: "projects", path: "#/projects" },
        { token: ctx.config.adminToken, name: "system", path: "#/system" },
        { token: ctx.config.adminToken, name: "operator-audit", path: "#/audit" },
        { token: ctx.config.adminToken, name: "credentials", path: `#/projects/${a.project.id}/credentials` },
        { token: ctx.config.adminToken, name: "project-overview", path: `#/projects/${a.project.id}/` },
        {
          token: ctx.config.adminToken,
          name: "operator-webhooks",
          path: `#/projects/${a.project.id}/webhooks`,
        },
      ];
      const signedIn = new Map<string, Page>();
      const violations: string[] = [];
      for (const { token, name, path } of pages) {
        let page = signedIn.get(token);
        if (!page) {
          page = await signIn(token);
          signedIn.set(token, page);
        }
        await page.goto(`${base}/${path}`);
        await settled(page);
        const found = await accessibilityViolations(page);
        violations.push(...found.map((v) => `${name}: ${v}`));
        await screenshot(page, name);
        await expectNoCspViolations(page);
      }
      const signInPage = await (await browser.newContext()).newPage();
      await signInPage.goto(`${base}/`);
      await signInPage.getByRole("button", { name: "Sign in" }).waitFor();
      await signInPage.evaluate(axeSource);
      const signInViolations = await signInPage.evaluate(async () => {
        const axe = (
          window as unknown as {
            axe: { run(): Promise<{ violations: Array<{ id: string; impact: string }> }> };
          }
        ).axe;
        return (await axe.run()).violations
          .filter((v) => v.impact === "serious" || v.impact === "critical")
          .map((v) => v.id);
      });
      violations.push(...signInViolations.map((v) => `sign-in: ${v}`));
      await screenshot(signInPage, "sign-in");
      await signInPage.context().close();
      expect(violations).toEqual([]);
    },
    browserTestTimeoutMs,
  );
});
