# ferry as a container beside the engine: `ferry schedule` runs backups on a schedule, configured
# by FERRY_* variables, and picks the containers to back up by label (ferry.backup=true), as
# docker-volume-backup users run theirs. docs/commands.md, "ferry schedule" and "ferry in a
# container", says how to run it. (ferry's own lab has no base images and cannot build it; the
# same entrypoint is tested as a process in test/e2e/schedule.test.ts.)
#
#   docker build -t ferry .
#   docker run -d --name ferry --restart unless-stopped \
#     -v /var/run/docker.sock:/var/run/docker.sock -v /srv/backups:/backups \
#     -e FERRY_SCHEDULE='0 3 * * *' -e FERRY_KEEP_DAILY=7 ferry

FROM node:20-slim AS build
WORKDIR /src
COPY package.json package-lock.json ./
# no install scripts: the build below is the only one
RUN npm ci --ignore-scripts
COPY tsconfig.json ./
COPY src ./src
RUN npx tsc -p tsconfig.json && npm prune --omit=dev --ignore-scripts

FROM node:20-slim
WORKDIR /opt/ferry
COPY --from=build /src/node_modules ./node_modules
COPY --from=build /src/dist ./dist
COPY package.json README.md ./
COPY bin ./bin
RUN ln -s /opt/ferry/bin/ferry.js /usr/local/bin/ferry
# Defaults a docker run -e overrides: back up the containers labelled ferry.backup=true, every
# day at midnight (UTC), into /backups (mount the backup disk there, or give an ssh:// or s3://
# store).
ENV TZ=UTC \
    FERRY_SCHEDULE=@daily \
    FERRY_OUTPUT=/backups \
    FERRY_FILTER=label=ferry.backup=true
VOLUME /backups
# `docker stop` sends SIGTERM: the run under way stops in order (containers resumed, no partial
# bundle) and ferry exits 143. Give it time: docker stop -t 60.
STOPSIGNAL SIGTERM
ENTRYPOINT ["ferry", "schedule"]
