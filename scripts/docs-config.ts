// Rewrites the variables table of docs/configuration.md from packages/config's schema.
import { readFileSync, writeFileSync } from "node:fs";
import { withConfigurationTable } from "@postern/config";

const file = new URL("../docs/configuration.md", import.meta.url);
writeFileSync(file, withConfigurationTable(readFileSync(file, "utf8")));
