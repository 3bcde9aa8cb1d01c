package graphrec;

import java.io.IOException;
import java.io.InputStream;
import java.nio.file.Path;
import java.util.concurrent.CountDownLatch;

import org.neo4j.configuration.GraphDatabaseInternalSettings;
import org.neo4j.configuration.GraphDatabaseSettings;
import org.neo4j.configuration.connectors.BoltConnector;
import org.neo4j.configuration.connectors.HttpConnector;
import org.neo4j.configuration.connectors.HttpsConnector;
import org.neo4j.configuration.helpers.SocketAddress;
import org.neo4j.dbms.api.DatabaseManagementService;
import org.neo4j.dbms.api.DatabaseManagementServiceBuilder;
import org.neo4j.io.ByteUnit;

/**
 * Starts an embedded Neo4j Community DBMS whose only listener is Bolt on 127.0.0.1.
 *
 * Usage: Launcher --home DIR --port N [--pagecache 512m] [--watch-stdin] [--conf-file neo4j.conf]
 *
 * A conf file (neo4j.conf syntax) is loaded first, for tuning; the network settings below are
 * applied after it, so no conf file can open a listener beyond loopback or turn reporting back on.
 *
 * Prints exactly one line "READY bolt://127.0.0.1:N" once the DBMS accepts connections, and shuts
 * down cleanly on SIGTERM/SIGINT or, with --watch-stdin, when standard input reaches EOF (so a
 * parent that dies cannot leave an orphaned server behind).
 */
public final class Launcher {
    private Launcher() {}

    public static void main(String[] args) throws Exception {
        Path home = null;
        int port = -1;
        String pagecache = "512m";
        boolean watchStdin = false;
        Path confFile = null;
        for (int i = 0; i < args.length; i++) {
            switch (args[i]) {
                case "--home" -> home = Path.of(args[++i]).toAbsolutePath();
                case "--port" -> port = Integer.parseInt(args[++i]);
                case "--pagecache" -> pagecache = args[++i];
                case "--watch-stdin" -> watchStdin = true;
                case "--conf-file" -> confFile = Path.of(args[++i]).toAbsolutePath();
                default -> fail("unknown argument '" + args[i] + "'");
            }
        }
        if (home == null || port <= 0 || port > 65535) {
            fail("usage: Launcher --home DIR --port N [--pagecache SIZE] [--watch-stdin] [--conf-file FILE]");
        }

        SocketAddress bolt = new SocketAddress("127.0.0.1", port);
        DatabaseManagementServiceBuilder builder = new DatabaseManagementServiceBuilder(home);
        if (confFile != null) {
            builder.loadPropertiesFromFile(confFile);
        }
        builder
                // Every listener defaults to loopback; Bolt is the only one the embedded DBMS opens.
                .setConfig(GraphDatabaseSettings.default_listen_address, new SocketAddress("127.0.0.1"))
                .setConfig(GraphDatabaseSettings.default_advertised_address, new SocketAddress("127.0.0.1"))
                .setConfig(BoltConnector.enabled, true)
                .setConfig(BoltConnector.listen_address, bolt)
                .setConfig(BoltConnector.advertised_address, bolt)
                .setConfig(BoltConnector.encryption_level, BoltConnector.EncryptionLevel.DISABLED)
                .setConfig(BoltConnector.server_bolt_telemetry_enabled, false)
                .setConfig(HttpConnector.enabled, false)
                .setConfig(HttpsConnector.enabled, false)
                // A loopback-only server for one local user: authentication adds nothing but secrets to manage.
                .setConfig(GraphDatabaseSettings.auth_enabled, false)
                // Usage reporting ("UDC") is the only component of Community 5.26 that phones home.
                .setConfig(GraphDatabaseSettings.udc_enabled, false)
                .setConfig(GraphDatabaseInternalSettings.udc_network_enabled, false)
                .setConfig(GraphDatabaseSettings.pagecache_memory, ByteUnit.parse(pagecache));
        DatabaseManagementService dbms = builder.build();

        CountDownLatch stopped = new CountDownLatch(1);
        Runtime.getRuntime().addShutdownHook(new Thread(() -> {
            dbms.shutdown();
            stopped.countDown();
        }, "graphrec-shutdown"));

        System.out.println("READY bolt://127.0.0.1:" + port);
        System.out.flush();

        if (watchStdin) {
            InputStream in = System.in;
            byte[] buf = new byte[256];
            try {
                while (in.read(buf) >= 0) {
                    // drain until EOF
                }
            } catch (IOException ignored) {
                // a broken pipe means the parent is gone: shut down as on EOF
            }
            System.exit(0); // runs the shutdown hook
        }
        stopped.await();
    }

    private static void fail(String message) {
        System.err.println("graphrec launcher: " + message);
        System.exit(2);
    }
}
