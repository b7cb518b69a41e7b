import { openSecret } from "@postern/auth";
import type { ResolvedConfig } from "@postern/config";
import { type MessageStatus, uuidv7 } from "@postern/db";
import type { DkimSigner } from "@postern/dkim";
import { type DeliveryStore, deliverableStatuses, type StoredMessage } from "@postern/messages";
import { openRouteUrls, type RouteBook, routeFor, type StoredRoute } from "@postern/projects";
import { retryDelayMs } from "@postern/queue";
import type {
  ConnectionBusy,
  DeliveryOutcome,
  MxAnswer,
  MxResolver,
  RecipientVerdict,
  RelayEnvelope,
  RelayResult,
  UpstreamTransports,
  UpstreamVerdict,
} from "@postern/relay";

export interface DeliveryDeps {
  config: Pick<ResolvedConfig, "encryptionKey" | "delivery">;
  store: DeliveryStore;
  transports: UpstreamTransports;
  /** The projects' routes, read again only when a message's load shows a newer version. */
  routes: RouteBook;
  /** Direct delivery: MX look-ups (cached) and the MX hosts' port (DIRECT_SMTP_PORT). */
  direct: { mx: MxResolver; port: number };
  /** DKIM-signs a message at the moment it leaves (the stored bytes stay as received). */
  signer?: Pick<DkimSigner, "begin">;
  /**
   * Told when an attempt was recorded with a recipient failed 5.1.x in a project with
   * `autoSuppress` (the record added it to the suppressions): the project's cached policies go.
   */
  onSuppressed?: (projectId: string, addresses: string[]) => void;
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
  | { kind: "given_back"; retryInMs: number; reason: ConnectionBusy["reason"] };

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
): Promise<Sending | ConnectionBusy> {
  const { projectId, mailFrom } = message;
  if (!route) {
    const urls = [{ url: message.upstreamUrl, password: projectPassword(deps, message.upstreamSecret) }];
    return relayWithFailover(deps, projectId, urls, mailFrom, addresses, content, mayGiveBack);
  }
  switch (route.target.type) {
    case "reject":
      return { hosts: [], verdicts: addresses.map((a) => rejectedByRoute(a, route)), transaction: undefined };
    case "upstream": {
      const urls = openRouteUrls(route.target.urls, deps.config.encryptionKey);
      return relayWithFailover(deps, projectId, urls, mailFrom, addresses, content, mayGiveBack);
    }
    case "direct":
      return deliverDirect(deps, projectId, mailFrom, addresses, content);
    case "hybrid": {
      const direct = await deliverDirect(deps, projectId, mailFrom, addresses, content);
      const deferred = direct.verdicts.filter((v) => v.outcome === "deferred").map((v) => v.address);
      if (deferred.length === 0) return direct;
      const urls = openRouteUrls(route.target.urls, deps.config.encryptionKey);
      const relayed = await relayWithFailover(deps, projectId, urls, mailFrom, deferred, content, false);
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
 * Per recipient domain: its MX hosts by preference (or the implicit MX), each address in turn
 * with what the previous one deferred, as `relayWithFailover` does for URLs. Opportunistic TLS
 * (STARTTLS when offered, certificate not verified), no AUTH. A null MX fails the domain's
 * recipients at once (RFC 7505: 556 5.1.10); a domain that does not exist fails them; resolvers
 * that fail defer them.
 */
async function deliverDirect(
  deps: DeliveryDeps,
  projectId: string,
  mailFrom: string,
  addresses: string[],
  content: Content,
): Promise<Sending> {
  const byDomain = new Map<string, string[]>();
  for (const address of addresses) {
    const domain = address.slice(address.lastIndexOf("@") + 1).toLowerCase();
    byDomain.set(domain, [...(byDomain.get(domain) ?? []), address]);
  }
  const sending: Sending = { hosts: [], verdicts: [], transaction: undefined };
  for (const [domain, recipients] of byDomain) {
    const answer = await deps.direct.mx.lookup(domain);
    if (answer.kind !== "hosts") {
      const verdict = mxVerdict(domain, answer);
      sending.verdicts.push(...recipients.map((address) => ({ address, ...verdict })));
      continue;
    }
    const urls = answer.hosts.flatMap((host) =>
      host.addresses.map((ip) => ({
        url: `smtp://${ip.includes(":") ? `[${ip}]` : ip}:${deps.direct.port}`,
        password: undefined,
      })),
    );
    const sent = await relayWithFailover(deps, projectId, urls, mailFrom, recipients, content, false);
    if ("kind" in sent) continue; // never: without give-back, relayWithFailover answers verdicts
    sending.hosts.push(...sent.hosts);
    sending.verdicts.push(...sent.verdicts);
    sending.transaction = sent.transaction;
  }
  return sending;
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

/**
 * The recipients to the first URL, then those it deferred (no connection, TLS trouble, a 4xx) to
 * the next, and so on: the last URL's deferrals stand. A 5xx or a 2xx is final at any URL.
 */
async function relayWithFailover(
  deps: DeliveryDeps,
  projectId: string,
  urls: { url: string; password: string | undefined }[],
  mailFrom: string,
  recipients: string[],
  content: Content,
  mayGiveBack: boolean,
): Promise<
  { hosts: string[]; verdicts: RecipientVerdict[]; transaction: RelayResult["verdict"] } | ConnectionBusy
> {
  const hosts: string[] = [];
  const verdicts: RecipientVerdict[] = [];
  let remaining = recipients;
  let transaction: RelayResult["verdict"] | undefined;
  for (const [index, { url, password }] of urls.entries()) {
    const result = await deps.transports.relay(
      { projectId, upstreamUrl: url, password },
      { mailFrom, recipients: remaining, ...content },
    );
    if (result.busy && mayGiveBack && hosts.length === 0) return result.busy;
    hosts.push(result.upstreamHost);
    transaction = result.verdict;
    const last = index === urls.length - 1;
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

function givenBack(busy: ConnectionBusy): DeliveryRun {
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
