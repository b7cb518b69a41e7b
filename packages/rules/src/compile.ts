import { compileGlob, type Glob } from "./glob";
import type { Rule, RuleAction, RuleSet } from "./schema";

/**
 * A project's rules, compiled once per version (patterns split into pieces, texts lower-cased) and
 * judged in order: the first rule whose every condition holds decides; no rule holding allows.
 *
 * A rule that looks only at the envelope (`from`, `to`, or nothing) is judged at RCPT, recipient
 * by recipient. A rule that looks at the message (`headerFrom`, `subject`, `header`, `sizeOver`,
 * `attachmentExtensions`) is judged after DATA; a recipient that such a rule could still decide
 * (it comes first and its envelope conditions hold) is left to that judgement too, so the order of
 * the list means the same at both stages. After DATA the message gets one verdict for all of its
 * recipients: `deny` if one of them is denied, else `hold` if one is held, else `allow`.
 */

/** What the rules decide, and which rule did (none: no rule held, the message is allowed). */
export type Verdict = { action: "allow"; rule?: string } | { action: "hold" | "deny"; rule: string };

/** What the content rules look at, read while the message streams in (content.ts). */
export interface ContentFacts {
  /** Bytes of the message as the client sent it (Postern's trace header not counted). */
  size: number;
  /** Addresses of the top-level From header fields. */
  headerFrom: string[];
  /** Top-level header fields the rules name (lower-case names), unfolded and decoded, in order. */
  headers: Map<string, string[]>;
  /** Extensions (`.exe`) of every MIME part's file name, nested parts included, lower-case. */
  attachmentExtensions: Set<string>;
}

interface CompiledRule {
  name: string;
  action: RuleAction;
  from?: Glob;
  to?: Glob;
  headerFrom?: Glob;
  subject?: string;
  header?: { name: string; contains: string };
  sizeOver?: number;
  extensions?: string[];
  /** Looks at the message, not only the envelope: judged after DATA. */
  content: boolean;
}

export interface CompiledRules {
  version: number;
  /** No rule at all: nothing to judge. */
  readonly empty: boolean;
  /** Some rule looks at the message: read its MIME tree while it streams in. */
  readonly needsContent: boolean;
  /** Top-level header fields (lower-case names) the content rules look at. */
  readonly headerNames: ReadonlySet<string>;
  /** Some rule looks at attachments: every MIME part's header is read, not only the message's. */
  readonly needsParts: boolean;
  /** At RCPT: the verdict for this recipient, or `after_data` when a content rule may decide. */
  judgeRecipient(mailFrom: string, recipient: string): Verdict | "after_data";
  /** After DATA: one verdict for the message (`content` given whenever `needsContent`). */
  judgeMessage(mailFrom: string, recipients: string[], content: ContentFacts | undefined): Verdict;
}

export function compileRules(ruleSet: RuleSet): CompiledRules {
  const rules = ruleSet.rules.map(compileRule);
  const headerNames = new Set<string>();
  for (const rule of rules) {
    if (rule.subject !== undefined) headerNames.add("subject");
    if (rule.header) headerNames.add(rule.header.name);
  }
  const envelopeHolds = (rule: CompiledRule, mailFrom: string, recipient: string) =>
    (!rule.from || rule.from.matches(mailFrom)) && (!rule.to || rule.to.matches(recipient));

  const judgeOne = (mailFrom: string, recipient: string, content: ContentFacts | undefined): Verdict => {
    for (const rule of rules) {
      if (!envelopeHolds(rule, mailFrom, recipient)) continue;
      if (rule.content && !(content && contentHolds(rule, content))) continue;
      return verdictOf(rule);
    }
    return { action: "allow" };
  };

  return {
    version: ruleSet.version,
    empty: rules.length === 0,
    needsContent: rules.some((rule) => rule.content),
    headerNames,
    needsParts: rules.some((rule) => rule.extensions !== undefined),
    judgeRecipient(mailFrom, recipient) {
      for (const rule of rules) {
        if (!envelopeHolds(rule, mailFrom, recipient)) continue;
        return rule.content ? "after_data" : verdictOf(rule);
      }
      return { action: "allow" };
    },
    judgeMessage(mailFrom, recipients, content) {
      let held: Verdict | undefined;
      for (const recipient of recipients) {
        const verdict = judgeOne(mailFrom, recipient, content);
        if (verdict.action === "deny") return verdict;
        if (verdict.action === "hold") held ??= verdict;
      }
      return held ?? { action: "allow" };
    },
  };
}

function verdictOf(rule: CompiledRule): Verdict {
  return rule.action === "allow"
    ? { action: "allow", rule: rule.name }
    : { action: rule.action, rule: rule.name };
}

function compileRule(rule: Rule): CompiledRule {
  const { match } = rule;
  const compiled: CompiledRule = {
    name: rule.name,
    action: rule.action,
    content:
      match.headerFrom !== undefined ||
      match.subject !== undefined ||
      match.header !== undefined ||
      match.sizeOver !== undefined ||
      match.attachmentExtensions !== undefined,
  };
  if (match.from !== undefined) compiled.from = compileGlob(match.from);
  if (match.to !== undefined) compiled.to = compileGlob(match.to);
  if (match.headerFrom !== undefined) compiled.headerFrom = compileGlob(match.headerFrom);
  if (match.subject !== undefined) compiled.subject = match.subject.toLowerCase();
  if (match.header !== undefined)
    compiled.header = {
      name: match.header.name.toLowerCase(),
      contains: match.header.contains.toLowerCase(),
    };
  if (match.sizeOver !== undefined) compiled.sizeOver = match.sizeOver;
  if (match.attachmentExtensions !== undefined)
    compiled.extensions = match.attachmentExtensions.map((e) => `.${e.replace(/^\./, "").toLowerCase()}`);
  return compiled;
}

function contentHolds(rule: CompiledRule, content: ContentFacts): boolean {
  if (rule.sizeOver !== undefined && !(content.size > rule.sizeOver)) return false;
  if (rule.headerFrom && !content.headerFrom.some((address) => rule.headerFrom?.matches(address)))
    return false;
  if (rule.subject !== undefined && !contains(content.headers.get("subject"), rule.subject)) return false;
  if (rule.header && !contains(content.headers.get(rule.header.name), rule.header.contains)) return false;
  if (rule.extensions && !rule.extensions.some((extension) => content.attachmentExtensions.has(extension)))
    return false;
  return true;
}

/** Whether one of the fields' values contains `text` (lower-case), case-insensitively. */
function contains(values: string[] | undefined, text: string): boolean {
  return values?.some((value) => value.toLowerCase().includes(text)) ?? false;
}
