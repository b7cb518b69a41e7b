// Rewrites the error-codes table of docs/api.md from apps/api's table of errors.
import { readFileSync, writeFileSync } from "node:fs";
import { withApiErrorTable } from "@postern/api";

const file = new URL("../docs/api.md", import.meta.url);
writeFileSync(file, withApiErrorTable(readFileSync(file, "utf8")));
