package io.lakehouse.trino.pii;

import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardCopyOption;
import java.util.Base64;
import java.util.List;
import java.util.Map;
import java.util.concurrent.atomic.AtomicLong;

/**
 * Decrypts every case of the shared test vectors (tests/vectors/pii_v1.json) with this plugin's
 * {@link PiiKeystore} and prints the outcomes as JSON, for tests/test_trino_pii.py to compare with
 * what the vectors (and the Python keystore) say. Needs no Trino: {@code java -cp trino-pii.jar
 * io.lakehouse.trino.pii.VectorCheck tests/vectors/pii_v1.json}.
 *
 * <p>Three phases, each case in each: {@code before} (the keystore before the subject was forgotten),
 * {@code after} (the same keystore object once the file was replaced by the one after the forget
 * and a refresh interval passed: cached keys of the forgotten subject must be dropped) and
 * {@code fresh} (a new keystore object on the final file).
 *
 * <p>Then {@code readers}: the SQL function's core ({@link PiiGuard}: who asks, then the keystore)
 * with a readers file naming {@code carol}, on the first case that decrypts to a value: what carol,
 * dana, a NULL asked for by dana and a differently cased {@code Carol} get, how often the keystore
 * was reached for someone other than carol (never, or the check came too late), and what carol
 * gets once the file is revoked, damaged, replaced by a list of objects, or removed.
 */
public final class VectorCheck {
    private VectorCheck() {}

    public static void main(String[] args) throws IOException {
        if (args.length != 1) {
            System.err.println("usage: VectorCheck <vectors.json>");
            System.exit(2);
        }
        Map<?, ?> vectors = (Map<?, ?>) Json.parse(Files.readString(Path.of(args[0]), StandardCharsets.UTF_8));
        List<?> cases = (List<?>) vectors.get("cases");
        byte[] master = Base64.getDecoder().decode((String) vectors.get("master_key"));
        Path dir = Files.createTempDirectory("pii-vectors");
        try {
            Path file = dir.resolve("keystore.json");
            Files.writeString(file, (String) vectors.get("keystore_before_forget"), StandardCharsets.UTF_8);
            AtomicLong clock = new AtomicLong();
            PiiKeystore keystore = new PiiKeystore(file, master, clock::get, PiiKeystore.REFRESH_NANOS);
            StringBuilder out = new StringBuilder("{");
            out.append("\"before\":").append(run(keystore, cases));
            Path next = dir.resolve("keystore.json.tmp");
            Files.writeString(next, (String) vectors.get("keystore"), StandardCharsets.UTF_8);
            Files.move(next, file, StandardCopyOption.ATOMIC_MOVE, StandardCopyOption.REPLACE_EXISTING);
            clock.addAndGet(PiiKeystore.REFRESH_NANOS);
            out.append(",\"after\":").append(run(keystore, cases));
            PiiKeystore fresh = new PiiKeystore(file, master, clock::get, PiiKeystore.REFRESH_NANOS);
            out.append(",\"fresh\":").append(run(fresh, cases));
            out.append(",\"readers\":").append(readers(dir, clock, fresh, cases));
            System.out.println(out.append('}'));
        } finally {
            try (var files = Files.list(dir)) {
                for (Path p : files.toList()) {
                    Files.deleteIfExists(p);
                }
            }
            Files.deleteIfExists(dir);
        }
    }

    private static String readers(Path dir, AtomicLong clock, PiiKeystore keystore, List<?> cases)
            throws IOException {
        Map<?, ?> chosen = null;
        for (Object item : cases) {
            Map<?, ?> entry = (Map<?, ?>) item;
            if (entry.get("after_forget") instanceof Map<?, ?> outcome && "value".equals(outcome.get("outcome"))) {
                chosen = entry;
                break;
            }
        }
        if (chosen == null) {
            throw new IllegalStateException("no vector decrypts to a value");
        }
        byte[] value = ((String) chosen.get("ciphertext")).getBytes(StandardCharsets.UTF_8);
        Path file = dir.resolve("pii_readers.json");
        replace(file, "[\"carol\", \"svc-reporting\"]");
        PiiReaders readers = new PiiReaders(file, clock::get, PiiKeystore.REFRESH_NANOS);
        String[] asking = {"carol"};
        AtomicLong reachedForOthers = new AtomicLong();
        PiiGuard guard = new PiiGuard(() -> readers, () -> {
            if (!asking[0].equals("carol")) {
                reachedForOthers.incrementAndGet();
            }
            return keystore;
        });
        StringBuilder out = new StringBuilder("{\"case\":").append(Json.quote((String) chosen.get("name")));
        String[][] steps = {
            {"carol", "carol", null},
            {"dana", "dana", null},
            {"dana_null", "dana", "null"},
            {"Carol", "Carol", null},
            {"empty_user", "", null},
            {"revoked", "carol", "[\"svc-reporting\"]"},
            {"damaged", "carol", "[\"carol\""},
            {"not_names", "carol", "[{\"user\": \"carol\"}]"},
            {"restored", "carol", "[\"carol\"]"},
            {"removed", "carol", ""},
        };
        for (String[] step : steps) {
            if (step[2] != null && !step[2].equals("null")) {
                if (step[2].isEmpty()) {
                    Files.delete(file);
                } else {
                    replace(file, step[2]);
                }
                clock.addAndGet(PiiKeystore.REFRESH_NANOS);
            }
            asking[0] = step[1];
            out.append(',').append(Json.quote(step[0])).append(':')
                    .append(outcome(() -> guard.decrypt(step[1], "null".equals(step[2]) ? null : value)));
        }
        return out.append(",\"keystore_reached_for_others\":").append(reachedForOthers.get()).append('}').toString();
    }

    private static void replace(Path file, String text) throws IOException {
        Path next = file.resolveSibling(file.getFileName() + ".tmp");
        Files.writeString(next, text, StandardCharsets.UTF_8);
        Files.move(next, file, StandardCopyOption.ATOMIC_MOVE, StandardCopyOption.REPLACE_EXISTING);
    }

    private static String outcome(java.util.function.Supplier<byte[]> decrypt) {
        try {
            byte[] plain = decrypt.get();
            return plain == null
                    ? "{\"outcome\":\"null\"}"
                    : "{\"outcome\":\"value\",\"value\":" + Json.quote(new String(plain, StandardCharsets.UTF_8)) + "}";
        } catch (PiiException exc) {
            return "{\"outcome\":\"" + (exc.denied() ? "denied" : "error") + "\",\"error\":" + Json.quote(exc.getMessage()) + "}";
        }
    }

    private static String run(PiiKeystore keystore, List<?> cases) {
        StringBuilder out = new StringBuilder("{");
        for (Object item : cases) {
            Map<?, ?> entry = (Map<?, ?>) item;
            String ciphertext = (String) entry.get("ciphertext");
            String result;
            try {
                byte[] plain = keystore.decrypt(ciphertext == null ? null : ciphertext.getBytes(StandardCharsets.UTF_8));
                result = plain == null
                        ? "{\"outcome\":\"null\"}"
                        : "{\"outcome\":\"value\",\"value\":" + Json.quote(new String(plain, StandardCharsets.UTF_8)) + "}";
            } catch (PiiException exc) {
                result = "{\"outcome\":\"error\",\"error\":" + Json.quote(exc.getMessage()) + "}";
            }
            if (out.length() > 1) {
                out.append(',');
            }
            out.append(Json.quote((String) entry.get("name"))).append(':').append(result);
        }
        return out.append('}').toString();
    }
}
