import { useEffect, useState } from "preact/hooks";
import { api } from "../api";
import { useResource, useTitle } from "../hooks";
import { useScope } from "../scope";
import { ErrorNote, Loaded } from "../ui";

interface RuleSet {
  version: number;
  rules: Array<{ name: string; match: Record<string, unknown>; action: string }>;
}

/**
 * The project's rules as the API holds them: an ordered list, edited as JSON (docs/rules.md) and
 * replaced as a whole against the version read, so a concurrent change is refused, not lost.
 */
export function Rules() {
  useTitle("Rules");
  const scope = useScope();
  const ruleSet = useResource<RuleSet>(`${scope.api}/rules`);
  const [text, setText] = useState("");
  const [error, setError] = useState<Error>();
  const [saved, setSaved] = useState<string>();
  useEffect(() => {
    if (ruleSet.data) setText(JSON.stringify(ruleSet.data.rules, null, 2));
  }, [ruleSet.data]);
  return (
    <>
      <h1>Rules</h1>
      <Loaded resource={ruleSet}>
        {(data) => (
          <form
            onSubmit={async (event) => {
              event.preventDefault();
              setError(undefined);
              setSaved(undefined);
              let rules: unknown;
              try {
                rules = JSON.parse(text);
              } catch (failure) {
                setError(new Error(`not JSON: ${(failure as Error).message}`));
                return;
              }
              try {
                const result = await api<{ version: number }>(`${scope.api}/rules`, {
                  method: "PUT",
                  body: { version: data.version, rules },
                });
                setSaved(`Saved as version ${result.version}.`);
                await ruleSet.reload();
              } catch (failure) {
                setError(failure as Error);
              }
            }}
          >
            <p>
              Version {data.version}; {data.rules.length} rules, judged in order, the first that matches wins
              (allow, hold or deny); no match: allow.
            </p>
            <label class="field">
              <span>Rules (JSON)</span>
              <textarea
                rows={16}
                spellcheck={false}
                value={text}
                onInput={(event) => setText((event.currentTarget as HTMLTextAreaElement).value)}
              />
            </label>
            <button type="submit">Save rules</button>
            {saved ? <p role="status">{saved}</p> : null}
            {error ? <ErrorNote error={error} /> : null}
          </form>
        )}
      </Loaded>
    </>
  );
}
