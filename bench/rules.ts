import type { Rule } from "@postern/rules";

/**
 * The rules of `pooled-10k-rules` (issue 25): twenty, as a tenant that uses them in earnest might
 * keep, none of which holds for the benchmark's messages (`bench@bench.example` to
 * `sink@bench.example`, Subject `bench <n>`, one text/plain part), so every message is judged
 * against the whole list and delivered. Envelope rules are judged at RCPT; the header and size
 * rules and the attachment rule make every message's MIME tree be read after DATA.
 */
export const benchRules: Rule[] = [
  { name: "vip-allow", match: { to: "ceo@partner.example" }, action: "allow" },
  { name: "no-competitor", match: { to: "*@competitor.example" }, action: "deny" },
  { name: "no-competitor-subdomains", match: { to: "*@*.competitor.example" }, action: "deny" },
  { name: "no-noreply-sender", match: { from: "noreply@*" }, action: "deny" },
  { name: "review-new-domain", match: { to: "*@new-customer.example" }, action: "hold" },
  { name: "no-test-accounts", match: { to: "test+*@*" }, action: "deny" },
  {
    name: "no-internal-relay",
    match: { from: "*@internal.example", to: "*@*.internal.example" },
    action: "deny",
  },
  { name: "staging-sender", match: { from: "*@staging.bench.example" }, action: "hold" },
  { name: "marketing-from", match: { headerFrom: "*@marketing.example" }, action: "hold" },
  { name: "spoofed-ceo", match: { headerFrom: "ceo@*", from: "*@bulk.example" }, action: "deny" },
  { name: "subject-test", match: { subject: "[test]" }, action: "deny" },
  { name: "subject-draft", match: { subject: "DRAFT - do not send" }, action: "deny" },
  { name: "subject-urgent-wire", match: { subject: "urgent wire transfer" }, action: "hold" },
  {
    name: "campaign-header",
    match: { header: { name: "X-Campaign", contains: "spring-sale" } },
    action: "hold",
  },
  { name: "precedence-junk", match: { header: { name: "Precedence", contains: "junk" } }, action: "deny" },
  { name: "mailer-blast", match: { header: { name: "X-Mailer", contains: "blaster" } }, action: "deny" },
  { name: "huge-to-partner", match: { to: "*@partner.example", sizeOver: 5_000_000 }, action: "hold" },
  { name: "too-large", match: { sizeOver: 20_000_000 }, action: "deny" },
  {
    name: "no-executables",
    match: { attachmentExtensions: [".exe", ".scr", ".bat", ".cmd", ".js", ".vbs"] },
    action: "deny",
  },
  { name: "blocked-recipient", match: { to: "abuse-trap@*.example" }, action: "deny" },
];
