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
