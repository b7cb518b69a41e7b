export { createRulesCache, defaultRulesCacheTtlMs, type RulesCache, type RulesCacheOptions } from "./cache";
export { type CompiledRules, type ContentFacts, compileRules, type Verdict } from "./compile";
export {
  type ContentInspector,
  type ContentReading,
  extensionOf,
  inspectContent,
  maxMimeParts,
} from "./content";
export { compileGlob, type Glob } from "./glob";
export {
  type ReplaceRuleSetResult,
  type RuleSetDeps,
  type RulesActor,
  readRuleSet,
  replaceRuleSet,
  rulesInvalidationChannel,
} from "./rule-sets";
export {
  describeRulesError,
  maxRules,
  type Rule,
  type RuleAction,
  type RuleMatch,
  type RuleSet,
  type RuleSetInput,
  ruleSchema,
  ruleSetInputSchema,
  rulesSchema,
} from "./schema";
