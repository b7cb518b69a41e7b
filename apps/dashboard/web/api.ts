/**
 * The dashboard's one way to the API: the same `/v1`, `/admin` and `/session` routes as any
 * client, authenticated by the session cookie the browser sends by itself (same origin), never by
 * a token this code holds. An error answer becomes an `ApiFailure` carrying the API's code and
 * message, which the pages show as they are.
 */

export class ApiFailure extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
  ) {
    super(message);
  }
}

/** Called when the API says the session is over (401), so the sign-in form comes back. */
let onSignedOut: () => void = () => {};
export function whenSignedOut(callback: () => void) {
  onSignedOut = callback;
}

export async function api<T>(path: string, init: { method?: string; body?: unknown } = {}): Promise<T> {
  let response: Response;
  try {
    response = await fetch(path, {
      method: init.method ?? "GET",
      credentials: "same-origin",
      headers: init.body === undefined ? {} : { "content-type": "application/json" },
      body: init.body === undefined ? undefined : JSON.stringify(init.body),
    });
  } catch {
    throw new ApiFailure(0, "network_error", "the server cannot be reached");
  }
  if (response.status === 204) return undefined as T;
  const text = await response.text();
  let json: unknown;
  try {
    json = text ? JSON.parse(text) : undefined;
  } catch {
    json = undefined;
  }
  if (!response.ok) {
    const error = (json as { error?: { code?: string; message?: string } } | undefined)?.error;
    const failure = new ApiFailure(
      response.status,
      error?.code ?? "http_error",
      error?.message ?? `the server answered ${response.status}`,
    );
    if (response.status === 401 && !path.startsWith("/session")) onSignedOut();
    throw failure;
  }
  return json as T;
}

/** `?a=1&b=2` of the values that are set. */
export function query(params: Record<string, string | number | undefined | null>): string {
  const search = new URLSearchParams();
  for (const [key, value] of Object.entries(params)) {
    if (value !== undefined && value !== null && value !== "") search.set(key, String(value));
  }
  const text = search.toString();
  return text ? `?${text}` : "";
}

export interface Session {
  kind: "project" | "operator";
  projectId: string | null;
  expiresAt: string;
}

export interface Page<T> {
  items: T[];
  nextCursor: string | null;
}

export interface MessageSummary {
  id: string;
  status: string;
  from: string;
  to: string[];
  messageId: string | null;
  subject: string | null;
  size: number;
  attemptCount: number;
  lastError: string | null;
  createdAt: string;
  updatedAt: string;
  nextAttemptAt: string | null;
  deliveredAt: string | null;
  completedAt: string | null;
}

export interface SmtpResult {
  code: number | null;
  enhancedCode: string | null;
  response: string | null;
}

export interface MessageDetail extends MessageSummary {
  sha256: string;
  recipients: Array<{ address: string; status: string } & SmtpResult>;
  attempts: Array<
    {
      number: number;
      startedAt: string;
      durationMs: number;
      upstreamHost: string;
      outcome: string;
      recipients: Array<Record<string, unknown>>;
    } & SmtpResult
  >;
}

export interface MessageEvent {
  id: string;
  messageId: string;
  type: string;
  createdAt: string;
  data: Record<string, unknown>;
}

export interface AuditEvent {
  id: string;
  createdAt: string;
  projectId: string | null;
  actor: string;
  action: string;
  ip: string | null;
  details: Record<string, unknown>;
}

export interface Project {
  id: string;
  name: string;
  status: "active" | "suspended";
  upstream?: string;
  quota: { perMinute: number; daily: number };
  maxRecipients: number;
  senderDomains: string[];
  mode: "live" | "sandbox";
  createdAt: string;
}

interface Usage {
  createdAt: string;
  lastUsedAt: string | null;
  revokedAt: string | null;
}

export interface ProjectDetail extends Project {
  credentials: Array<{ id: string; username: string } & Usage>;
  tokens: Array<{ id: string; prefix: string } & Usage>;
}

export interface CreatedProject extends Project {
  smtp: { id: string; username: string; password: string };
  apiToken: { id: string; token: string; prefix: string };
}

export const statusesOverTime = ["accepted", "delivered", "deferred", "failed"] as const;

export interface Stats {
  from: string;
  to: string;
  counts: Record<string, number>;
  series?: Array<{ hour: string } & Record<string, number | string>>;
  deliveryLatencyMs: { p50: number; p90: number; p99: number; sampled: number } | null;
  quota: {
    perMinute: { limit: number; used: number | null; resetsAt: string | null };
    daily: { limit: number; used: number | null; resetsAt: string | null };
  };
}
