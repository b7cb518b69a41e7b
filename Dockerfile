# One image for every Postern role: `start smtp`, `start worker`, `start api`, `start inbound`, or
# `start` for all.
FROM node:20-bookworm-slim

WORKDIR /app
# glibc's malloc as Node servers that move large buffers want it (docs/operations.md, Memory):
# two arenas instead of eight per core, and buffers of 16 KiB and more (a TLS record's worth)
# mapped and unmapped on their own, so memory freed after large messages goes back to the system.
ENV NODE_ENV=production \
    DATA_DIR=/var/lib/postern \
    MALLOC_ARENA_MAX=2 \
    MALLOC_MMAP_THRESHOLD_=16384

COPY package.json package-lock.json ./
COPY prisma ./prisma
COPY prisma.config.ts tsconfig.json ./
COPY scripts ./scripts
COPY apps ./apps
COPY packages ./packages

# The postinstall script generates the Prisma client (no engine download, see prisma/generate.mjs)
# and builds the bundle (dist/postern.mjs, scripts/bundle.mjs) that every role runs: plain node, no
# tsx loader thread.
RUN npm ci --omit=dev --no-audit --no-fund \
 && npm cache clean --force \
 && mkdir -p /var/lib/postern && chown node:node /var/lib/postern

# V8's old-generation limit (docs/operations.md, Memory): it also sets how far the generation
# grows between full collections, and Node's default on a large machine lets it reach 4 times what
# is live. Set after the install, which is not a Postern process.
ENV NODE_OPTIONS=--max-old-space-size=512

USER node
# 2526: the inbound role (BOUNCE_DOMAIN), published as port 25 of the bounce domain's MX host.
EXPOSE 587 465 2526 8080
ENTRYPOINT ["node", "dist/postern.mjs"]
CMD ["start"]
