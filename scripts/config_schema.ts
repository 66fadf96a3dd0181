/**
 * Prints `passthrough_config.schema.json` from the one description of the config
 * (`lib/config/schema.ts`): `deno run scripts/config_schema.ts > passthrough_config.schema.json`.
 * A test fails while the committed file differs.
 *
 * @module
 */

import { configJsonSchemaText } from "../lib/config/schema.ts";

Deno.stdout.writeSync(new TextEncoder().encode(configJsonSchemaText()));
