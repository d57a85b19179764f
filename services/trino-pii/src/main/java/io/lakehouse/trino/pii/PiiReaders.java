package io.lakehouse.trino.pii;

import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.HashSet;
import java.util.List;
import java.util.Objects;
import java.util.Set;
import java.util.function.LongSupplier;

/**
 * Who may decrypt personal data: the user names in the JSON list at {@code path}, which the policy
 * compiler writes from the users whose principal holds the clearance of an encrypted sensitive
 * class (services/lakehouse/governance/_compile.py, {@code pii_readers}). A name is compared as
 * Trino's session user, exactly (case included).
 *
 * <p>The file is re-read when it changed, checked at most once per {@code refreshNanos}. Closed on
 * failure: a missing, unreadable, oversized or damaged file refuses everyone, and a failed re-read
 * drops the list it had (an error never outlives a revocation). Thread-safe.
 */
public final class PiiReaders {
    public static final String ENV = "LAKEHOUSE_PII_READERS_FILE";
    static final long MAX_FILE_BYTES = 1L << 20;

    private record State(Object signature, Set<String> users) {}

    private final Path path;
    private final LongSupplier clock;
    private final long refreshNanos;
    private final Object lock = new Object();
    private volatile State state;
    private volatile long checkedAt;

    public PiiReaders(Path path, LongSupplier clock, long refreshNanos) {
        this.path = Objects.requireNonNull(path);
        this.clock = clock;
        this.refreshNanos = refreshNanos;
    }

    /** Throws a {@link PiiException#denied() denial} unless {@code user} is a reader. */
    public void require(String user) {
        if (user == null || !users().contains(user)) {
            throw PiiException.denied(user + " is not cleared to decrypt personal data");
        }
    }

    private Set<String> users() {
        State current = state;
        if (current != null && clock.getAsLong() - checkedAt < refreshNanos) {
            return current.users();
        }
        synchronized (lock) {
            long now = clock.getAsLong();
            current = state;
            if (current != null && now - checkedAt < refreshNanos) {
                return current.users(); // another thread checked a moment ago
            }
            state = null; // until the check below succeeds, nobody is a reader
            checkedAt = now;
            Object signature;
            try {
                signature = FileSignature.of(path);
            } catch (IOException exc) {
                throw refused("cannot be read: " + exc, exc);
            }
            State fresh = current != null && Objects.equals(signature, current.signature())
                    ? current : load(signature);
            state = fresh;
            return fresh.users();
        }
    }

    private State load(Object signature) {
        if (signature == null) {
            throw refused("does not exist", null);
        }
        Object parsed;
        try {
            if (Files.size(path) > MAX_FILE_BYTES) {
                throw refused("is larger than " + MAX_FILE_BYTES + " bytes", null);
            }
            parsed = Json.parse(new String(Files.readAllBytes(path), StandardCharsets.UTF_8));
        } catch (IOException | IllegalArgumentException exc) {
            throw refused("cannot be read: " + exc.getMessage(), exc);
        }
        if (!(parsed instanceof List<?> list)) {
            throw refused("is not a JSON list of user names", null);
        }
        Set<String> users = new HashSet<>();
        for (Object item : list) {
            if (!(item instanceof String name) || name.isEmpty()) {
                throw refused("is not a JSON list of user names", null);
            }
            users.add(name);
        }
        return new State(signature, Set.copyOf(users));
    }

    private PiiException refused(String what, Throwable cause) {
        return PiiException.denied("nobody may decrypt personal data: the readers file " + path + " (" + ENV
                + ") " + what + "; the policy compiler writes it (lakehouse stack start)", cause);
    }
}
