package io.lakehouse.trino.pii;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.NoSuchFileException;
import java.nio.file.Path;
import java.nio.file.attribute.BasicFileAttributes;
import java.util.Arrays;
import java.util.List;
import java.util.Map;

/** What tells a file's change without reading it: every writer replaces the file (a new inode). */
final class FileSignature {
    private FileSignature() {}

    /** Inode, size and times of {@code path}; null if it does not exist. */
    static Object of(Path path) throws IOException {
        try {
            Map<String, Object> unix = Files.readAttributes(path, "unix:dev,ino,size,lastModifiedTime,ctime");
            return List.of(unix.get("dev"), unix.get("ino"), unix.get("size"), unix.get("lastModifiedTime"),
                    unix.get("ctime"));
        } catch (NoSuchFileException exc) {
            return null;
        } catch (UnsupportedOperationException | IllegalArgumentException exc) {
            try {
                BasicFileAttributes basic = Files.readAttributes(path, BasicFileAttributes.class);
                return Arrays.asList(basic.fileKey(), basic.size(), basic.lastModifiedTime());
            } catch (NoSuchFileException missing) {
                return null;
            }
        }
    }
}
