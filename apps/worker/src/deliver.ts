import { openSecret } from "@postern/auth";
import type { ResolvedConfig } from "@postern/config";
import { type MessageStatus, uuidv7 } from "@postern/db";
import type { DkimSigner } from "@postern/dkim";
import { type DeliveryStore, deliverableStatuses, type StoredMessage } from "@postern/messages";
import {
  openRouteUrls,
  type RouteBook,
  type RouteTarget,
  routeFor,
  type StoredRoute,
  unusableLocalAddress,
} from "@postern/projects";
import { retryDelayMs } from "@postern/queue";
import {
  type ConnectionBusy,
  type DeliveryOutcome,
  type DestinationLimits,
  type DestinationSignal,
  type DestinationThrottle,
  type MtaStsPolicies,
  type MxAnswer,
  type MxResolver,
  type RecipientVerdict,
  type RelayEnvelope,
  type RelayResult,
  type SessionSettings,
  signalOf,
  type UpstreamTransports,
  type UpstreamVerdict,
} from "@postern/relay";
import type { ReturnPaths } from "@postern/verp";

export interface DeliveryDeps {
  config: Pick<ResolvedConfig, "encryptionKey" | "delivery">;
  store: DeliveryStore;
  transports: UpstreamTransports;
  /** The projects' routes, read again only when a message's load shows a newer version. */
  routes: RouteBook;
  /**
   * Direct delivery: MX look-ups (cached), the MX hosts' port (DIRECT_SMTP_PORT), MTA-STS policies
   * (the `verify` TLS policy) and the turn of each project's source addresses.
   */
  direct: { mx: MxResolver; port: number; mtaSts: MtaStsPolicies; sourceAddresses: SourceAddressRotation };
  /** Per-destination concurrency and rate caps, shared by every worker (docs/routing.md, Throttling). */
  throttle: DestinationThrottle;
  /** DKIM-signs a message at the moment it leaves (the stored bytes stay as received). */
  signer?: Pick<DkimSigner, "begin">;
  /**
   * Told when an attempt was recorded with a recipient failed 5.1.x in a project with
   * `autoSuppress` (the record added it to the suppressions): the project's cached policies go.
   */
  onSuppressed?: (projectId: string, addresses: string[]) => void;
  /** Set with BOUNCE_DOMAIN: the VERP return paths of projects with `returnPath: "verp"`. */
  returnPaths?: ReturnPaths;
}

/** What one run of a delivery job came to. */
export type DeliveryRun =
  | { kind: "skipped"; reason: "unknown_message" }
  /** Final, or waiting for something other than delivery (held). */
  | { kind: "skipped"; reason: "not_deliverable"; projectId: string }
  | { kind: "delivered"; projectId: string; acceptedAt: Date }
  | { kind: "failed"; projectId: string; reason: string }
  | { kind: "deferred"; projectId: string; retryInMs: number }
  /** Another run of the same message recorded its result first (a stalled job ran twice). */
  | { kind: "superseded"; projectId: string }
  /**
   * Not tried: no connection of its project or upstream could be had now. Nothing is recorded;
   * the job goes back to the queue for `retryInMs` rather than hold a worker slot.
   */
  | { kind: "given_back"; retryInMs: number; reason: GiveBack["reason"] };

/**
 * No delivery to this destination now: its concurrency or rate cap is reached (`DestinationThrottle`).
 * Given back to the queue like a `ConnectionBusy` while nothing of the attempt was sent; otherwise
 * its recipients are deferred with `response` as the reason.
 */
interface DestinationBusy {
  kind: "busy";
  reason: "destination_busy" | "destination_rate";
  retryInMs: number;
  response: string;
}

type GiveBack = ConnectionBusy | DestinationBusy;

/** How long this host's having an address (or not) is believed before it is checked again. */
const addressCheckMs = 60_000;

/**
 * Per project, which of its `localAddresses` the next direct delivery is made from, in turn, among
 * those this host has. They were checked when set, possibly on another host (the API's): an
 * address this worker's host lacks is skipped, and with none left the delivery is deferred
 * rather than sent from an address the operator did not choose for the project.
 */
export class SourceAddressRotation {
  private readonly next = new Map<string, number>();
  private readonly checked = new Map<string, { problem: Promise<string | undefined>; at: number }>();

  async pick(
    projectId: string,
    addresses: string[],
  ): Promise<{ localAddress: string | undefined } | { problem: string }> {
    if (addresses.length === 0) return { localAddress: undefined };
    const problems = await Promise.all(addresses.map((address) => this.problemOf(address)));
    const usable = addresses.filter((_, index) => problems[index] === undefined);
    if (usable.length === 0)
      return {
        problem: `none of the project's localAddresses is an address of this host (${addresses[0]}: ${problems[0]})`,
      };
    const index = (this.next.get(projectId) ?? 0) % usable.length;
    this.next.set(projectId, index + 1);
    return { localAddress: usable[index] };
  }

  private problemOf(address: string): Promise<string | undefined> {
    const known = this.checked.get(address);
    if (known && Date.now() - known.at < addressCheckMs) return known.problem;
    const problem = unusableLocalAddress([address]).then((found) => found?.reason);
    this.checked.set(address, { problem, at: Date.now() });
    return problem;
  }
}

type RecipientState = "pending" | "delivered" | "failed";

/** A message after its attempt at the upstream, its body let go: what the record is made of. */
interface Sent {
  message: Omit<StoredMessage, "body">;
  startedAt: Date;
  durationMs: number;
  upstreamHost: string;
  verdicts: RecipientVerdict[];
  transaction: { code: number | null; enhancedCode: string | null; response: string } | undefined;
}

/**
 * One delivery attempt of one message: read it from PostgreSQL (one query), send it to the
 * pending recipients over one of the project's upstream connections, and record the attempt, every
 * recipient's result, the message's new status, its event and, when final, its audit event in
 * one statement (`DeliveryStore` of @postern/messages).
 *
 * The read and the send take one of the project's connection turns (`projectId`, known from the
 * job; jobs enqueued before it was carried go without), so that a worker holds at most a body
 * per connection. A delivery that cannot have a connection soon is given back rather than wait
 * (see `UpstreamTransports.whenConnectionFree`); one whose upstream is suspended (circuit open)
 * is recorded as a deferred attempt with the suspension as its reason, without a connection. The record does not: it waits for a commit shared with other deliveries, and a
 * turn held through it would leave the connection idle, capping a project's rate at its
 * connections divided by the whole attempt's time instead of the exchange's.
 *
 * At least once: a crash after the upstream's 250 and before that statement commits sends the
 * message again on the next run (see docs/delivery.md).
 */
export async function deliverMessage(
  deps: DeliveryDeps,
  messageId: string,
  projectId?: string,
): Promise<DeliveryRun> {
  const send = () => loadAndSend(deps, messageId);
  const sent = await (projectId ? deps.transports.whenConnectionFree(projectId, send, givenBack) : send());
  return "kind" in sent ? sent : record(deps, sent);
}

async function loadAndSend(deps: DeliveryDeps, messageId: string): Promise<Sent | DeliveryRun> {
  const loaded = await deps.store.load(messageId);
  if (!loaded) return { kind: "skipped", reason: "unknown_message" };
  const { body, ...message } = loaded;
  // Only queued and deferred messages are sent: a job still queued for a message since delivered,
  // failed, cancelled or denied ends here without sending, and so does a stale job that names a
  // held or sandboxed message (the load reads the status of the moment; see docs/delivery.md).
  if (!deliverableStatuses.includes(message.status)) {
    return { kind: "skipped", reason: "not_deliverable", projectId: message.projectId };
  }
  const pending = message.recipients.filter((r) => r.status === "pending");
  const startedAt = new Date();

  let upstreamHost = message.upstreamUrl;
  let verdicts: RecipientVerdict[];
  let transaction: Sent["transaction"];
  if (!body) {
    // Retention never prunes pending messages; a missing body means the row was damaged by hand.
    const response = "message body is missing; it cannot be delivered";
    verdicts = pending.map((r) => ({
      address: r.address,
      outcome: "failed",
      code: null,
      enhancedCode: null,
      response,
    }));
  } else if (pending.length > 0) {
    const routes = await deps.routes.routesOf(message.projectId, message.routesVersion);
    // Signed once, whatever routes its recipients take; the stored bytes stay as received, the
    // signature goes in front of them as they are sent.
    const signature = await deps.signer?.begin(message.projectId, body);
    const content: Content = { raw: body, prefix: signature?.field };
    const hosts: string[] = [];
    verdicts = [];
    for (const [route, addresses] of byRoute(
      pending.map((r) => r.address),
      (a) => routeFor(routes, a),
    )) {
      // Given back only while nothing of this attempt has been sent (no verdict yet).
      const sent = await sendOnRoute(deps, message, route, addresses, content, verdicts.length === 0);
      if ("kind" in sent) return givenBack(sent);
      hosts.push(...sent.hosts);
      verdicts.push(...sent.verdicts);
      transaction = sent.transaction;
    }
    upstreamHost = hosts.length > 0 ? [...new Set(hosts)].join(", ") : "route";
    // One route: the transaction's verdict is the attempt's; several: per-recipient results only.
    if (hosts.length !== 1) transaction = undefined;
  } else {
    verdicts = [];
  }
  const durationMs = Date.now() - startedAt.getTime();
  return { message, startedAt, durationMs, upstreamHost, verdicts, transaction };
}

/** What goes after DATA: the stored bytes, and the DKIM signature (made meanwhile) in front. */
type Content = Pick<RelayEnvelope, "raw" | "prefix">;

type Sending = {
  hosts: string[];
  verdicts: RecipientVerdict[];
  transaction: RelayResult["verdict"] | undefined;
};

/** One route's recipients of a message (route undefined: the project's upstream). */
async function sendOnRoute(
  deps: DeliveryDeps,
  message: Omit<StoredMessage, "body">,
  route: StoredRoute | undefined,
  addresses: string[],
  content: Content,
  mayGiveBack: boolean,
): Promise<Sending | GiveBack> {
  const { projectId } = message;
  const mailFrom = envelopeSender(deps, message);
  const limits = limitsOf(deps, route?.target);
  if (!route) {
    const urls = [{ url: message.upstreamUrl, password: projectPassword(deps, message.upstreamSecret) }];
    return relayWithFailover(deps, projectId, urls, mailFrom, addresses, content, mayGiveBack, limits);
  }
  switch (route.target.type) {
    case "reject":
      return { hosts: [], verdicts: addresses.map((a) => rejectedByRoute(a, route)), transaction: undefined };
    case "upstream": {
      const urls = openRouteUrls(route.target.urls, deps.config.encryptionKey);
      return relayWithFailover(deps, projectId, urls, mailFrom, addresses, content, mayGiveBack, limits);
    }
    case "direct":
      return deliverDirect(deps, message, route.target, addresses, content, mayGiveBack, limits);
    case "hybrid": {
      // What the MX hosts defer, a throttled domain included, goes to the URLs in the same attempt.
      const direct = await deliverDirect(deps, message, route.target, addresses, content, false, limits);
      if ("kind" in direct) return direct; // never: without give-back, verdicts
      const deferred = direct.verdicts.filter((v) => v.outcome === "deferred").map((v) => v.address);
      if (deferred.length === 0) return direct;
      const urls = openRouteUrls(route.target.urls, deps.config.encryptionKey);
      const relayed = await relayWithFailover(
        deps,
        projectId,
        urls,
        mailFrom,
        deferred,
        content,
        false,
        limits,
      );
      if ("kind" in relayed) return direct;
      return {
        hosts: [...direct.hosts, ...relayed.hosts],
        verdicts: [...direct.verdicts.filter((v) => v.outcome !== "deferred"), ...relayed.verdicts],
        transaction: relayed.transaction,
      };
    }
  }
}

/**
 * The envelope sender towards the upstream or MX hosts: the message's own, or its VERP return
 * path (docs/bounces.md) when its project asks for one and BOUNCE_DOMAIN is set. A null sender
 * stays null: nothing may answer a message sent with `<>` (RFC 5321 4.5.5), so it needs no
 * return path.
 */
function envelopeSender(deps: DeliveryDeps, message: Omit<StoredMessage, "body">): string {
  if (!deps.returnPaths || message.returnPath !== "verp" || message.mailFrom === "") return message.mailFrom;
  return deps.returnPaths.addressFor(message.id);
}

/** A route's caps per destination, each the route's own or else the default (DESTINATION_*). */
function limitsOf(deps: DeliveryDeps, target: RouteTarget | undefined): DestinationLimits {
  const defaults = deps.config.delivery.destination;
  const own = target && "limits" in target ? target.limits : undefined;
  return {
    concurrency: own?.concurrency ?? defaults.concurrency,
    ratePerMinute: own?.ratePerMinute ?? defaults.ratePerMinute,
  };
}

/**
 * Per recipient domain: its MX hosts by preference (or the implicit MX), each address in turn
 * with what the previous one deferred, as `relayWithFailover` does for URLs; the domain is the
 * destination its caps count (one delivery, however many MX hosts it tries). No AUTH. A null MX
 * fails the domain's recipients at once (RFC 7505: 556 5.1.10); a domain that does not exist
 * fails them; resolvers that fail defer them.
 *
 * TLS as the route says: `opportunistic` STARTTLS when offered, the certificate not verified;
 * `required` STARTTLS or nothing is sent; `verify` also a certificate valid for the MX host's name,
 * and only MX hosts that the domain's MTA-STS policy (RFC 8461) lists when it enforces one. The
 * connections are made from the project's source addresses in turn, if it has any.
 */
async function deliverDirect(
  deps: DeliveryDeps,
  message: Omit<StoredMessage, "body">,
  target: { tls?: "opportunistic" | "required" | "verify" },
  addresses: string[],
  content: Content,
  mayGiveBack: boolean,
  limits: DestinationLimits,
): Promise<Sending | DestinationBusy> {
  const { projectId } = message;
  const mailFrom = envelopeSender(deps, message);
  const tls = target.tls ?? "opportunistic";
  const byDomain = new Map<string, string[]>();
  for (const address of addresses) {
    const domain = address.slice(address.lastIndexOf("@") + 1).toLowerCase();
    byDomain.set(domain, [...(byDomain.get(domain) ?? []), address]);
  }
  const sending: Sending = { hosts: [], verdicts: [], transaction: undefined };
  const deferAll = (recipients: string[], response: string) => {
    const verdict: UpstreamVerdict = { outcome: "deferred", code: null, enhancedCode: null, response };
    sending.verdicts.push(...recipients.map((address) => ({ address, ...verdict })));
  };
  for (const [domain, recipients] of byDomain) {
    const answer = await deps.direct.mx.lookup(domain);
    if (answer.kind !== "hosts") {
      const verdict = mxVerdict(domain, answer);
      sending.verdicts.push(...recipients.map((address) => ({ address, ...verdict })));
      continue;
    }
    let hosts = answer.hosts;
    if (tls === "verify") {
      const checked = await Promise.all(hosts.map((host) => deps.direct.mtaSts.check(domain, host.name)));
      const refusal = checked.find((verdict) => !verdict.allowed);
      hosts = hosts.filter((_, index) => checked[index]?.allowed);
      if (hosts.length === 0) {
        deferAll(recipients, refusal && !refusal.allowed ? refusal.reason : `no MX host for ${domain}`);
        continue;
      }
    }
    const source = await deps.direct.sourceAddresses.pick(projectId, message.localAddresses);
    if ("problem" in source) {
      deferAll(recipients, source.problem);
      continue;
    }
    const { localAddress } = source;
    const urls = hosts.flatMap((host) =>
      host.addresses.map((ip) => ({
        url: `smtp://${ip.includes(":") ? `[${ip}]` : ip}:${deps.direct.port}`,
        password: undefined,
        session: {
          localAddress,
          requireTls: tls !== "opportunistic",
          verifyName: tls === "verify" ? host.name : undefined,
        },
      })),
    );
    const sent = await underThrottle(
      deps,
      domain,
      limits,
      () => relayWithFailover(deps, projectId, urls, mailFrom, recipients, content, false, undefined),
      (result) => ("kind" in result ? [] : result.verdicts),
      (result) => ("kind" in result ? [] : result.hosts),
    );
    if ("kind" in sent) {
      // Throttled (relayWithFailover without give-back answers verdicts). Nothing of the attempt
      // decided yet: it goes back to the queue; otherwise the domain waits for the next attempt.
      if (!("response" in sent)) continue;
      if (mayGiveBack && sending.verdicts.length === 0) return sent;
      deferAll(recipients, sent.response);
      continue;
    }
    sending.hosts.push(...sent.hosts);
    sending.verdicts.push(...sent.verdicts);
    sending.transaction = sent.transaction;
  }
  return sending;
}

/**
 * One delivery to `destination` (a recipient domain, or an upstream's host:port) under its caps:
 * refused, the `DestinationBusy` to give back or defer; admitted, `send` runs and the answer
 * (`verdictsOf`) moves the destination's limit (AIMD, see DestinationThrottle).
 */
async function underThrottle<T>(
  deps: DeliveryDeps,
  destination: string,
  limits: DestinationLimits,
  send: () => Promise<T>,
  verdictsOf: (result: T) => { outcome: string; code: number | null; enhancedCode: string | null }[],
  hostsOf: (result: T) => string[],
): Promise<T | DestinationBusy> {
  const admission = await deps.throttle.admit(destination, limits);
  if (admission.kind === "throttled") {
    const rate = admission.reason === "destination_rate";
    return {
      kind: "busy",
      reason: admission.reason,
      // When the throttle says, ±20% so that deliveries throttled together do not come back together.
      retryInMs: Math.round(Math.max(admission.retryInMs, 1_000) * (0.8 + Math.random() * 0.4)),
      response: rate
        ? `delivery to ${destination} throttled: ${admission.limit} started within the last minute, its rate per minute`
        : `delivery to ${destination} throttled: ${admission.limit} in flight, its concurrency limit`,
    };
  }
  let signal: DestinationSignal = "neutral";
  try {
    const result = await send();
    signal = signalOf(verdictsOf(result));
    // Pushed back: the sessions kept idle to its hosts go too, so it sees fewer at once.
    if (signal === "pushed_back")
      for (const host of hostsOf(result)) deps.transports.dropIdleConnections(host);
    return result;
  } finally {
    // A lease that cannot be given back (Redis unreachable) expires by itself.
    await deps.throttle.settle(admission.lease, signal).catch(() => {});
  }
}

function mxVerdict(domain: string, answer: Exclude<MxAnswer, { kind: "hosts" }>): UpstreamVerdict {
  if (answer.kind === "null_mx")
    return {
      outcome: "failed",
      code: 556,
      enhancedCode: "5.1.10",
      response: `556 5.1.10 ${domain} accepts no mail (null MX, RFC 7505)`,
    };
  if (answer.kind === "no_domain")
    return { outcome: "failed", code: 550, enhancedCode: "5.1.2", response: `550 5.1.2 ${answer.reason}` };
  return { outcome: "deferred", code: null, enhancedCode: null, response: answer.reason };
}

function projectPassword(deps: DeliveryDeps, sealed: string | null): string | undefined {
  return sealed ? openSecret(sealed, deps.config.encryptionKey) : undefined;
}

/** Recipients grouped by the route they fall on (undefined: the project's upstream), in order. */
function byRoute(
  addresses: string[],
  routeOf: (address: string) => StoredRoute | undefined,
): Map<StoredRoute | undefined, string[]> {
  const groups = new Map<StoredRoute | undefined, string[]>();
  for (const address of addresses) {
    const route = routeOf(address);
    groups.set(route, [...(groups.get(route) ?? []), address]);
  }
  return groups;
}

/**
 * A recipient whose route became `reject` after it was accepted (the routes changed meanwhile):
 * failed as it would have been refused at RCPT.
 */
function rejectedByRoute(address: string, route: StoredRoute): RecipientVerdict {
  return {
    address,
    outcome: "failed",
    code: 550,
    enhancedCode: "5.7.1",
    response: `550 5.7.1 recipient refused by the project's route '${route.match}'`,
  };
}

/** An upstream URL, or an MX host's address as one, with its password and session settings. */
interface RelayTarget {
  url: string;
  password: string | undefined;
  session?: SessionSettings;
}

/**
 * The recipients to the first URL, then those it deferred (no connection, TLS trouble, a 4xx, its
 * destination throttled) to the next, and so on: the last URL's deferrals stand. A 5xx or a 2xx is
 * final at any URL. With `limits`, each URL's host:port is a destination with those caps.
 */
async function relayWithFailover(
  deps: DeliveryDeps,
  projectId: string,
  urls: RelayTarget[],
  mailFrom: string,
  recipients: string[],
  content: Content,
  mayGiveBack: boolean,
  limits: DestinationLimits | undefined,
): Promise<
  { hosts: string[]; verdicts: RecipientVerdict[]; transaction: RelayResult["verdict"] } | GiveBack
> {
  const hosts: string[] = [];
  const verdicts: RecipientVerdict[] = [];
  let remaining = recipients;
  let transaction: RelayResult["verdict"] | undefined;
  for (const [index, { url, password, session }] of urls.entries()) {
    const relay = () =>
      deps.transports.relay(
        { projectId, upstreamUrl: url, password, session },
        { mailFrom, recipients: remaining, ...content },
      );
    const result = limits
      ? await underThrottle(
          deps,
          destinationOfUrl(url),
          limits,
          relay,
          (r) => r.recipients,
          (r) => [r.upstreamHost],
        )
      : await relay();
    const last = index === urls.length - 1;
    if ("kind" in result) {
      if (mayGiveBack && hosts.length === 0) return result;
      const throttled: UpstreamVerdict = {
        outcome: "deferred",
        code: null,
        enhancedCode: null,
        response: result.response,
      };
      transaction = throttled;
      if (last) verdicts.push(...remaining.map((address) => ({ address, ...throttled })));
      continue;
    }
    if (result.busy && mayGiveBack && hosts.length === 0) return result.busy;
    hosts.push(result.upstreamHost);
    transaction = result.verdict;
    const deferred = result.recipients.filter((v) => v.outcome === "deferred" && !last);
    verdicts.push(...result.recipients.filter((v) => !deferred.includes(v)));
    remaining = deferred.map((v) => v.address);
    if (remaining.length === 0) break;
  }
  return {
    hosts,
    verdicts,
    transaction: transaction ??
      verdicts[0] ?? { outcome: "deferred", code: null, enhancedCode: null, response: "no upstream" },
  };
}

/** An upstream URL's destination for throttling: its host and port, as `RelayResult.upstreamHost`. */
function destinationOfUrl(url: string): string {
  const parsed = new URL(url);
  return `${parsed.hostname}:${parsed.port || (parsed.protocol === "smtps:" ? 465 : 25)}`;
}

function givenBack(busy: GiveBack): DeliveryRun {
  return { kind: "given_back", retryInMs: busy.retryInMs, reason: busy.reason };
}

async function record(deps: DeliveryDeps, sent: Sent): Promise<DeliveryRun> {
  const { store, config } = deps;
  const { message, startedAt, durationMs, upstreamHost, verdicts, transaction } = sent;
  const attemptNumber = message.attempts + 1;

  const exhausted = attemptNumber >= config.delivery.maxAttempts;
  const stateOf = (outcome: DeliveryOutcome): RecipientState =>
    outcome === "deferred" ? (exhausted ? "failed" : "pending") : outcome;
  const results = verdicts.map((verdict) => ({ ...verdict, state: stateOf(verdict.outcome) }));
  const resultByAddress = new Map(results.map((r) => [r.address, r]));
  const finalStates = message.recipients.map((r) => resultByAddress.get(r.address)?.state ?? r.status);
  const status: MessageStatus = finalStates.includes("pending")
    ? "deferred"
    : finalStates.includes("delivered")
      ? "delivered"
      : "failed";
  const problem = results.find((r) => r.state !== "delivered");
  const lastError = problem ? `${problem.address}: ${problem.response}` : null;
  const retryInMs = retryDelayMs(attemptNumber, config.delivery.backoffSeconds);
  const now = new Date();
  const final = status === "delivered" || status === "failed";

  const updated = message.recipients.flatMap((recipient) => {
    const result = resultByAddress.get(recipient.address);
    return result
      ? [
          {
            id: recipient.id,
            status: result.state,
            code: result.code,
            enhancedCode: result.enhancedCode,
            response: result.response,
          },
        ]
      : [];
  });
  // Every recipient as it stands after this attempt: the event's data and the final audit's.
  const recipientResults = message.recipients.map((r) => {
    const result = resultByAddress.get(r.address);
    return {
      address: r.address,
      status: result?.state ?? r.status,
      code: result?.code ?? r.code,
      enhancedCode: result?.enhancedCode ?? r.enhancedCode,
      response: result?.response ?? r.response,
    };
  });
  const recorded = await store.record({
    messageId: message.id,
    loadedAttempts: message.attempts,
    status,
    nextAttemptAt: status === "deferred" ? new Date(now.getTime() + retryInMs) : null,
    lastError,
    now,
    attempt: {
      id: uuidv7(startedAt.getTime()),
      number: attemptNumber,
      startedAt,
      durationMs,
      upstreamHost,
      code: transaction?.code ?? results[0]?.code ?? null,
      enhancedCode: transaction?.enhancedCode ?? results[0]?.enhancedCode ?? null,
      response: transaction?.response ?? results[0]?.response ?? null,
      recipients: results.map(({ address, outcome, code, enhancedCode, response }) => ({
        address,
        outcome,
        code,
        enhancedCode,
        response,
      })),
    },
    recipients: updated,
    audit: final
      ? {
          action: status === "delivered" ? "message.delivered" : "message.failed",
          details: {
            messageId: message.id,
            attempts: attemptNumber,
            upstreamHost,
            recipients: recipientResults,
          },
        }
      : null,
    event: { attempt: attemptNumber, upstreamHost, recipients: recipientResults },
  });

  if (!recorded) return { kind: "superseded", projectId: message.projectId };
  if (message.autoSuppress) {
    const suppressed = results.filter((r) => r.state === "failed" && r.enhancedCode?.startsWith("5.1."));
    if (suppressed.length > 0)
      deps.onSuppressed?.(
        message.projectId,
        suppressed.map((r) => r.address),
      );
  }
  if (status === "delivered")
    return { kind: "delivered", projectId: message.projectId, acceptedAt: message.createdAt };
  if (status === "failed")
    return { kind: "failed", projectId: message.projectId, reason: lastError ?? "failed" };
  return { kind: "deferred", projectId: message.projectId, retryInMs };
}
